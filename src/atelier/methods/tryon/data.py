"""A VITON-HD split as the try-on network's inputs: person, masked person, mask, DensePose, control image, caption.

One `TryOnItem` per pair, every image resized to the model's size (H, W) in [-1, 1]; the mask is 1 where the
garment is to be drawn (VITON-HD's agnostic-mask is white there). The control image is the garment photo (try-on)
or the garment sketch (design: im_sketch/ in the paired setting, im_sketch_unpaired/ in the unpaired one), and the
caption is MGD's noun phrases of the garment joined by ", " (design only; try-on reads the empty prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atelier.data.formats.vitonhd import TryOnPair, VitonHDSplit, garment_id, stem
from atelier.data.transforms import load_image_tensor, open_rgb
from atelier.errors import UserError


@dataclass
class TryOnItem:
    """One pair's inputs (each (C, H, W); images in [-1, 1], mask in {0, 1}) and its output name."""

    name: str
    person: torch.Tensor  # the ground truth in the paired setting (the person wearing their own garment)
    agnostic: torch.Tensor
    mask: torch.Tensor
    densepose: torch.Tensor
    control: torch.Tensor
    caption: str


def load_mask(path: Path, size_hw: tuple[int, int]) -> torch.Tensor:
    """A mask image as (1, H, W) in {0, 1} (white = set), resized nearest."""
    from atelier.data.formats.vitonhd import image_size

    image_size(path, "agnostic mask")  # unreadable: one error naming the file
    with Image.open(path) as image:
        grey = image.convert("L").resize((size_hw[1], size_hw[0]), Image.Resampling.NEAREST)
    return torch.from_numpy((np.asarray(grey) >= 128).astype(np.float32))[None]


def caption_text(captions: dict[str, list[str]], garment: str, where: Path | str) -> str:
    """MGD's caption of a garment: its noun phrases joined by ", "; UserError naming the file when it has none."""
    phrases = captions.get(garment_id(garment))
    if not phrases:
        raise UserError(f"{where}: no caption for garment {garment_id(garment)} ({garment}); add its noun phrases "
                        "or leave the pair out")
    return ", ".join(phrases)


class TryOnExamples:
    """The pairs of a VITON-HD split in one setting, read lazily as `TryOnItem`s at `image_size` (H, W)."""

    def __init__(self, split: VitonHDSplit, image_size: tuple[int, int], mode: str = "tryon", setting: str = "paired",
                 max_pairs: int | None = None) -> None:
        self.split, self.image_size, self.mode, self.setting = split, tuple(image_size), mode, setting
        pairs = split.setting(setting) if split.split == "test" else list(split.pairs)
        self.pairs: list[TryOnPair] = pairs[:max_pairs] if max_pairs else pairs
        if not self.pairs:
            raise UserError(f"{split.root / (split.split + '_pairs.txt')}: the file lists no pairs")
        self.captions = split.captions() if mode == "design" else {}

    def __len__(self) -> int:
        return len(self.pairs)

    def output_name(self, index: int) -> str:
        """`<person stem>.png`: what the vitonhd protocol matches against test/image."""
        return f"{stem(self.pairs[index].person)}.png"

    def control_path(self, pair: TryOnPair) -> Path:
        if self.mode == "design":
            return self.split.sketch(pair, "paired" if pair.person == pair.garment else "unpaired")
        return self.split.cloth(pair)

    def caption(self, index: int) -> str:
        """The pair's caption (design), or the empty prompt (try-on)."""
        if self.mode != "design":
            return ""
        return caption_text(self.captions, self.pairs[index].garment, self.split.captions_file())

    def __getitem__(self, index: int) -> TryOnItem:
        pair, size = self.pairs[index], self.image_size
        return TryOnItem(
            name=self.output_name(index),
            person=load_image_tensor(self.split.image(pair), size),
            agnostic=load_image_tensor(self.split.agnostic(pair), size),
            mask=load_mask(self.split.agnostic_mask(pair), size),
            densepose=load_image_tensor(self.split.densepose(pair), size),
            control=load_image_tensor(self.control_path(pair), size),
            caption=self.caption(index),
        )


def stack(items: list[TryOnItem]) -> dict[str, torch.Tensor]:
    """The items' tensors batched by field (person, agnostic, mask, densepose, control)."""
    return {key: torch.stack([getattr(item, key) for item in items]) for key in ("person", "agnostic", "mask", "densepose", "control")}


def user_item(person: str | Path, control: str | Path, image_size: tuple[int, int], agnostic: str | Path,
              mask: str | Path, densepose: str | Path, caption: str = "") -> TryOnItem:
    """One pair from files a user names (the person is read only for the preview grid)."""
    open_rgb(person)
    return TryOnItem(Path(person).stem + ".png", load_image_tensor(person, image_size), load_image_tensor(agnostic, image_size),
                     load_mask(Path(mask), image_size), load_image_tensor(densepose, image_size),
                     load_image_tensor(control, image_size), caption)
