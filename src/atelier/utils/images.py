"""Conversions between PIL images, uint8 arrays and [-1, 1] float tensors, and image grids."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor (3, H, W) in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [-1, 1] -> PIL RGB (rounded, clipped)."""
    array = ((tensor.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).numpy())


def make_grid(rows: list[list[Image.Image]], cell: tuple[int, int] | None = None, pad: int = 2) -> Image.Image:
    """Paste a table of images (rows of equal length) into one white-padded grid image."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    width, height = cell or rows[0][0].size
    grid = Image.new("RGB", (n_cols * (width + pad) + pad, n_rows * (height + pad) + pad), "white")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid.paste(image.convert("RGB").resize((width, height)), (pad + c * (width + pad), pad + r * (height + pad)))
    return grid
