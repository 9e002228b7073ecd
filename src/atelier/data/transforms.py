"""Image loading and resizing for training and sampling (PIL in, [-1, 1] tensors out)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from PIL import Image, UnidentifiedImageError

from atelier.errors import UserError
from atelier.utils.images import pil_to_tensor

CropMode = Literal["resize", "center", "random"]
MAX_SIDE = 4096  # the largest side a size flag accepts, in pixels (SD 1.x draws at 512; VAE tiling goes further)


def open_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB, with a clear error naming the file when it is missing or unreadable."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image {path} not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UserError(f"image {path} could not be read ({error}); remove or replace the file") from None


def resize_image(image: Image.Image, size_hw: tuple[int, int], crop: CropMode = "resize",
                 generator: torch.Generator | None = None) -> Image.Image:
    """Resize to (H, W): plain resize, or scale-to-cover then centre/random crop (keeps the aspect ratio)."""
    height, width = size_hw
    if crop == "resize":
        return image.resize((width, height), Image.BICUBIC)
    scale = max(width / image.width, height / image.height)
    scaled = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))), Image.BICUBIC)
    spare_x, spare_y = scaled.width - width, scaled.height - height
    if crop == "random":
        left = int(torch.randint(0, spare_x + 1, (1,), generator=generator))
        top = int(torch.randint(0, spare_y + 1, (1,), generator=generator))
    else:
        left, top = spare_x // 2, spare_y // 2
    return scaled.crop((left, top, left + width, top + height))


def load_image_tensor(path: str | Path, size_hw: tuple[int, int], crop: CropMode = "resize") -> torch.Tensor:
    """An image file as a (3, H, W) tensor in [-1, 1]."""
    return pil_to_tensor(resize_image(open_rgb(path), size_hw, crop))


def parse_size(text: str, flag: str, order: Literal["wh", "hw"] = "wh", minimum: int = 1,
               maximum: int = MAX_SIDE) -> tuple[int, int]:
    """'WxH' -> (W, H) (`order="wh"`, sampling sizes) or 'HxW' -> (H, W) (`order="hw"`, the papers' test sizes).

    The error names the flag and the expected form; sides below `minimum` or above `maximum` are refused (a side of
    100000 px would ask for tens of GB before the first step, and end in a MemoryError instead of an image).
    """
    form, example = ("WIDTHxHEIGHT", "176x256") if order == "wh" else ("HEIGHTxWIDTH", "256x176")
    try:
        first, second = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected {form} with positive integers, e.g. {example}") from None
    if min(first, second) < max(minimum, 1):
        raise UserError(f"{flag} {text}: each side must be at least {max(minimum, 1)} px, e.g. {example}")
    if max(first, second) > maximum:
        raise UserError(f"{flag} {text}: each side must be at most {maximum} px, e.g. {example}")
    return first, second
