"""The held-out identities' images the stages score on, with what FashionSynth knows about each.

Every stage scores photos of identities no model trained on: FashionSynth's test split (style/test.lst, and the
test rows of labels/attributes.jsonl). `HeldOut` loads them the one way every stage uses: at the demo's resolution
(PIL bicubic), as images or as [-1, 1] tensors, with their captions, garment masks and parse maps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

Kind = Literal["photo", "illustration"]


def heldout_attributes(data: Path) -> list[dict]:
    """Held-out attribute rows (labels/attributes.jsonl entries of the test split)."""
    rows = [json.loads(line) for line in (data / "labels" / "attributes.jsonl").read_text().splitlines() if line.strip()]
    return [row for row in rows if row["split"] == "test"]


PHOTO_STRIDE = 2  # 20 of the 40 held-out photos: the style and illustrate stages in half the sampling time


def heldout_names(data: Path) -> list[str]:
    """File names of the held-out photos (style/test.lst), in its order."""
    return [line.strip() for line in (data / "style" / "test.lst").read_text().splitlines() if line.strip()]


def scored_names(data: Path, fast: bool) -> list[str]:
    """The held-out photos `style` and `illustrate` score: every PHOTO_STRIDE-th (all identities, half their poses),
    the first 4 with --fast."""
    names = heldout_names(data)
    return names[:4] if fast else names[::PHOTO_STRIDE]


@dataclass
class HeldOut:
    """Named held-out images of a FashionSynth folder (`data`); every method loads them afresh."""

    data: Path
    names: list[str]
    size_hw: tuple[int, int]  # the demo's resolution (DemoContext.resolution)

    def originals(self, kind: Kind) -> list[Image.Image]:
        """The images as stored (FashionSynth's full size)."""
        from atelier.data.transforms import open_rgb

        return [open_rgb(self.data / "style" / kind / name) for name in self.names]

    def images(self, kind: Kind, size_hw: tuple[int, int] | None = None) -> list[Image.Image]:
        """The images resized (PIL bicubic) to `size_hw`, the demo's resolution by default."""
        from atelier.data.transforms import resize_image

        return [resize_image(image, size_hw or self.size_hw) for image in self.originals(kind)]

    def tensors(self, kind: Kind) -> torch.Tensor:
        """The images at the demo's resolution as a (N, 3, H, W) tensor in [-1, 1] (what the models take)."""
        from atelier.utils.images import pil_to_tensor

        return torch.stack([pil_to_tensor(image) for image in self.images(kind)])

    def captions(self, prefix: str = "") -> list[str]:
        """The photos' captions, each after `prefix` (the style LoRA's identifier)."""
        return [prefix + (self.data / "style" / "photo" / name).with_suffix(".txt").read_text().strip() for name in self.names]

    def label_maps(self, kind: Literal["garment_mask", "parse"]) -> list[np.ndarray]:
        """Per-image label maps at FashionSynth's size: the garment mask (uint8, 255 inside) or the parse labels."""
        return [np.asarray(Image.open(self.data / "labels" / kind / f"{Path(name).stem}.png")) for name in self.names]
