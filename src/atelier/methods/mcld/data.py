"""MCLD's inputs per image of a DeepFashion-layout split, as MCLD's loader reads them beside `<split>_highres/`:

    <split>_densepose/<stem>.png   the DensePose IUV (atelier.data.densepose): the TARGET's pose
    <split>_texture/<stem>.png     the SMPL UV texture map (atelier.data.uv_texture): the SOURCE's appearance
    <split>_face/<stem>.npy        the face embedding (ArcFace; FashionSynth's identity vector): zeros when missing

The IUV image goes to the pose guider as an RGB reader sees MCLD's file ((V, U, I) / 255, in [0, 1]), resized to the
generated size by nearest neighbour (interpolating would invent part indices). A missing IUV or texture is a one-line
UserError naming the file and the commands that write them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from atelier.data.densepose import iuv_array, read_iuv
from atelier.data.transforms import load_image_tensor
from atelier.errors import UserError

FACE_PARTS = (23, 24)  # DensePose's head parts: MCLD's face region
MAKE_THEM = "run `atelier prepare-conditions` on the folder (or write FashionSynth with `atelier synth --conditions`)"


def condition_paths(image_path: str | Path) -> dict[str, Path]:
    """{densepose, texture, face} files of image `<root>/<split>_<images>/<name>` in MCLD's layout."""
    image_path = Path(image_path)
    split = image_path.parent.name.split("_", 1)[0]
    root, stem = image_path.parent.parent, image_path.stem
    return {"densepose": root / f"{split}_densepose" / f"{stem}.png", "texture": root / f"{split}_texture" / f"{stem}.png",
            "face": root / f"{split}_face" / f"{stem}.npy"}


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: {what} not found; {MAKE_THEM}")
    return path


def read_pose_iuv(path: Path, size_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(IUV image (3, H, W) in [0, 1], face mask (1, H, W) of parts 23/24) at `size_hw`, nearest-neighbour."""
    iuv = read_iuv(_require(path, "the DensePose IUV image"))
    image = Image.fromarray(iuv_array(iuv.parts, iuv.u, iuv.v), "RGB").resize(size_hw[::-1], Image.NEAREST)
    array = np.asarray(image)
    face = np.isin(array[..., 2], FACE_PARTS).astype(np.float32)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0, torch.from_numpy(face)[None]


def read_texture(path: Path, size_hw: tuple[int, int]) -> torch.Tensor:
    """The texture map (3, H, W) in [-1, 1]."""
    return load_image_tensor(_require(path, "the UV texture map"), size_hw)


def read_face(path: Path, dim: int) -> torch.Tensor:
    """The face embedding (dim,) float32; zeros when the file is missing (no face found), as MCLD's loader does."""
    if not path.is_file():
        return torch.zeros(dim)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable .npy face embedding ({type(error).__name__})") from None
    if array.shape != (dim,) or not np.issubdtype(array.dtype, np.floating):
        raise UserError(f"{path}: face embedding of shape {array.shape} and type {array.dtype}; this model expects "
                        f"{dim} floats")
    return torch.from_numpy(array.astype(np.float32))


def face_cells(mask: torch.Tensor, latent_scale: int) -> torch.Tensor:
    """A pixel mask (..., 1, H, W) -> the share of face pixels in every latent cell (..., 1, H/s, W/s)."""
    return F.avg_pool2d(mask, latent_scale)
