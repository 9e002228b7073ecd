"""DensePose IUV images as MCLD (Liu et al., CVPR 2025) stores them: one PNG per photo, read and written here.

DensePose (Güler et al., CVPR 2018) gives every body pixel a part index I (1-24, 0 = background) and chart coordinates
U, V in [0, 1] on that part. MCLD pastes (I, U*255, V*255) into a canvas of the photo's size and writes it with OpenCV,
which stores the array's channels as B, G, R: a PNG whose red channel holds V*255, green U*255 and blue I. An RGB reader
(PIL) therefore sees (V, U, I); `read_iuv` undoes that, `write_iuv` is its inverse. The files must stay lossless (PNG):
a JPEG would smear the part indices.

Beside a DeepFashion-layout root (atelier.data.formats.deepfashion) an image `<split>_highres/<name>.jpg` has its IUV at
`<split>_densepose/<stem>.png` (`densepose_path`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from atelier.errors import UserError

NUM_PARTS = 24  # DensePose's body parts; 0 is the background
EXPECTED = "a DensePose IUV PNG (3 channels: V*255, U*255 and the part index 0-24 as an RGB reader sees them)"


@dataclass(frozen=True)
class Iuv:
    """A DensePose image: parts uint8 (H, W) with 0-24 (0 background), u and v float32 (H, W) in [0, 1]."""

    parts: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(W, H), as PIL gives an image's size."""
        return self.parts.shape[1], self.parts.shape[0]

    def check(self, photo_size: tuple[int, int], where: str | os.PathLike, photo: str | os.PathLike = "its photo") -> None:
        """UserError naming `where` when the IUV's (W, H) differs from the photo's `photo_size`."""
        if tuple(photo_size) != self.size:
            raise UserError(f"{where}: the DensePose image is {self.size[0]}x{self.size[1]} but {photo} is "
                            f"{photo_size[0]}x{photo_size[1]}; expected one IUV of the photo's size (run DensePose on "
                            "the photo as it is, without resizing)")


def iuv_from_array(array: np.ndarray, where: str | os.PathLike) -> Iuv:
    """An RGB uint8 (H, W, 3) array as an RGB reader sees MCLD's file ((V, U, I)) -> Iuv; UserError naming `where`
    for a part index above 24."""
    parts = array[..., 2]
    top = int(parts.max(initial=0))
    if top > NUM_PARTS:
        raise UserError(f"{where}: holds part index {top} in its blue channel; expected {EXPECTED} (is it a DensePose "
                        "rendering in colours, or another tool's channel order?)")
    return Iuv(parts.copy(), array[..., 1].astype(np.float32) / 255.0, array[..., 0].astype(np.float32) / 255.0)


def read_iuv(path: str | os.PathLike, photo_size: tuple[int, int] | None = None) -> Iuv:
    """Read MCLD's IUV PNG at `path` (see the module docstring); with `photo_size` (W, H), check it matches. UserError
    (one line, naming the file) for an unreadable file, a file that is not 3-channel, or a part index above 24."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            mode = image.mode
            array = np.asarray(image) if mode == "RGB" else None
    except FileNotFoundError:
        raise UserError(f"{path}: DensePose image not found; expected {EXPECTED}") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; expected {EXPECTED}") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:  # PIL: a broken chunk
        raise UserError(f"{path}: the DensePose image is not a readable image ({type(error).__name__}); expected "
                        f"{EXPECTED}") from None
    if array is None:
        channels = len(Image.new(mode, (1, 1)).getbands()) if mode in Image.MODES else "?"
        raise UserError(f"{path}: the DensePose image is a {mode} image ({channels} channels); expected {EXPECTED}")
    if array.ndim != 3 or array.shape[2] != 3:
        raise UserError(f"{path}: the DensePose image decodes to shape {array.shape}; expected {EXPECTED}")
    iuv = iuv_from_array(array, path)
    if photo_size is not None:
        iuv.check(photo_size, path)
    return iuv


def iuv_array(parts: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The RGB uint8 (H, W, 3) array of MCLD's file, (V*255, U*255, I) rounded, 0 off the body."""
    parts = np.asarray(parts)
    if parts.ndim != 2 or np.shape(u) != parts.shape or np.shape(v) != parts.shape:
        raise ValueError(f"parts, u and v must be three (H, W) arrays of one shape; got {parts.shape}, {np.shape(u)}, "
                         f"{np.shape(v)}")
    if parts.size and (int(parts.min()) < 0 or int(parts.max()) > NUM_PARTS):
        raise ValueError(f"part indices must lie in 0-{NUM_PARTS}")
    body = parts > 0
    u8, v8 = (np.where(body, np.round(np.clip(values, 0.0, 1.0) * 255.0), 0).astype(np.uint8) for values in (u, v))
    return np.stack([v8, u8, parts.astype(np.uint8)], axis=-1)


def write_iuv(path: str | os.PathLike, parts: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    """Write an IUV PNG as MCLD's files are (the inverse of `read_iuv` up to rounding U, V to 1/255), atomically."""
    from atelier.utils.io import save_image

    save_image(Image.fromarray(iuv_array(parts, u, v), "RGB"), Path(path).with_suffix(".png"))


def densepose_path(root: str | os.PathLike, split: str, name: str) -> Path:
    """Where MCLD's layout keeps the IUV of DeepFashion image `name` of `split`: `<root>/<split>_densepose/<stem>.png`."""
    return Path(root) / f"{split}_densepose" / f"{Path(name).stem}.png"
