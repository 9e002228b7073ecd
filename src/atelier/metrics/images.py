"""Image listing, loading and the exact resize recipes of the evaluation protocols (PIL, torch; no OpenCV).

Every recipe returns a (3, H, W) numpy array: uint8 where the protocol works on quantised pixels, float32 in [0, 1]
where it does not (PIDM's bilinear resize), float32 in [0, 255] for clean-fid's 299x299 Inception input.

- `pil_resize`: PIL's resize (bicubic or bilinear, always antialiased), what torchvision's `Resize` does on PIL images
  (CFLD's ground truth and real set; LaDI-VTON's paired metrics).
- `cfld_generated`: CFLD's treatment of generated images: torch `interpolate(bicubic, antialias=True)` on [0,1]
  floats, times 255, clamp, cast to uint8 (a truncation, not a rounding, as in CFLD's test script), kept as uint8.
  Images already at the test size are used as stored.
- `pidm_image`: PIDM's chain: PIL bicubic to a square side x side PNG (its `prepare_data.py`, quantised), then
  OpenCV `cv2.resize(..., INTER_LINEAR)` on float32 to the test size (its metrics script). OpenCV is not a
  dependency: its INTER_LINEAR samples the same grid as torch `interpolate(bilinear, align_corners=False,
  antialias=False)` (source x = (x + 0.5) * scale - 0.5, two taps, clamped at the borders), which we use.
- `clean_resize_299`: clean-fid's "clean" mode: each channel as a float32 PIL image ("F" mode), PIL bicubic to
  299x299, values kept in [0, 255] (no quantisation, no clipping).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from atelier.config import MAX_IMAGE_SIDE
from atelier.data import transforms
from atelier.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def parse_size(text: str, flag: str = "--test-size") -> tuple[int, int]:
    """Parse a test size 'HxW' (e.g. 256x176, the papers' convention) into (height, width); 16..MAX_IMAGE_SIDE px a side."""
    size = transforms.parse_size(text, flag, order="hw", minimum=16)
    if max(size) > MAX_IMAGE_SIDE:
        raise UserError(f"{flag} {text}: each side must be at most {MAX_IMAGE_SIDE} px, e.g. 256x176")
    return size


def list_images(folder: str | os.PathLike, flag: str) -> list[Path]:
    """Sorted image files directly inside `folder` (not recursive); a clear error if there are none.

    Hidden files are skipped: `.NAME.RANDOM.tmp.png` is what an interrupted atomic write leaves behind (see
    atelier.utils.io), `._NAME.png` macOS metadata; neither is a generated image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{flag} {folder}: not a folder; expected a folder of images (.png/.jpg)")
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())
    if not files:
        raise UserError(f"{flag} {folder}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)} directly inside)")
    return files


def to_chw(image: Image.Image) -> np.ndarray:
    """PIL RGB -> uint8 (3, H, W)."""
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


def pil_resize(image: Image.Image, size: tuple[int, int], method: Literal["bicubic", "bilinear"]) -> np.ndarray:
    """Resize with PIL (antialiased) to (height, width) unless already that size; uint8 (3, H, W)."""
    height, width = size
    if image.size != (width, height):
        resample = Image.Resampling.BICUBIC if method == "bicubic" else Image.Resampling.BILINEAR
        image = image.resize((width, height), resample)
    return to_chw(image)


def cfld_generated(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """CFLD's generated-image step: torch bicubic+antialias on [0,1] floats, x255, clamp, truncate to uint8."""
    import torch
    import torch.nn.functional as F

    pixels = to_chw(image)
    if pixels.shape[1:] == tuple(size):
        return pixels
    floats = torch.from_numpy(pixels).float().div(255.0)[None]
    resized = F.interpolate(floats, size=tuple(size), mode="bicubic", antialias=True, align_corners=False)
    return (resized[0] * 255.0).clamp(0, 255).to(torch.uint8).numpy()


def pidm_image(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """PIDM's chain: PIL bicubic to a side x side square (uint8), then OpenCV-style bilinear to `size`; float32 [0,1]."""
    import torch
    import torch.nn.functional as F

    height, width = size
    if image.size != (width, height) and image.size != (height, height):
        image = image.resize((height, height), Image.Resampling.BICUBIC)
    pixels = to_chw(image)
    if pixels.shape[1:] == (height, width):
        return pixels.astype(np.float32) / 255.0
    floats = torch.from_numpy(pixels).float()[None]
    resized = F.interpolate(floats, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    return (resized[0] / 255.0).numpy()


def clean_resize_299(image: Image.Image) -> np.ndarray:
    """clean-fid 'clean' resize: per channel float32 PIL bicubic to 299x299; float32 (3, 299, 299) in [0, 255]."""
    pixels = np.asarray(image, dtype=np.uint8)
    channels = [
        np.asarray(Image.fromarray(pixels[:, :, c].astype(np.float32)).resize((299, 299), Image.Resampling.BICUBIC))
        for c in range(3)
    ]
    return np.stack(channels).astype(np.float32)
