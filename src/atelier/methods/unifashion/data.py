"""What the retrieval task trains and is scored on, from the data.formats readers.

- `ImageTextPairs` (phase `pretrain`): a FashionGen HDF5 file's images with their product descriptions, read a row at
  a time (the released train file is about 17 GB), optionally kept in memory after the first read (`cache`: small
  data such as FashionSynth).
- `ComposedTriplets` (phase `composed`): FashionIQ triplets (reference image, the two relative captions as one query
  text, target image) of the chosen categories; each triplet's images come from the images folder.

Images are returned as uint8 tensors (3, H, W) at `size` (bicubic); the model's own preprocessing normalises them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from atelier.data.formats.fashioniq import CATEGORIES, composed_query_text, load_fashioniq
from atelier.data.transforms import open_rgb
from atelier.errors import UserError


def image_tensor(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (3, H, W) of `image` resized (bicubic) to `size` (H, W)."""
    resized = image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)


class ImageTextPairs:
    """The (image, description) rows of one FashionGen file, the first `limit` of them when given."""

    def __init__(self, path: str | os.PathLike, size: tuple[int, int], limit: int | None = None, cache: bool = False):
        from atelier.data.formats.fashiongen import FashionGenH5

        self.file = FashionGenH5(path)
        self.size = size
        self.count = len(self.file) if limit is None else min(limit, len(self.file))
        if self.count == 0:
            raise UserError(f"{path}: the file holds no products; expected image/description pairs to train on")
        self._cache: dict[int, tuple[torch.Tensor, str]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        item = (image_tensor(self.file.image(index), self.size), self.file.description(index))
        if self._cache is not None:
            self._cache[index] = item
        return item

    def batch(self, indices: Iterable[int]) -> tuple[torch.Tensor, list[str]]:
        """uint8 (B, 3, H, W) images and their descriptions."""
        items = [self[index] for index in indices]
        return torch.stack([image for image, _ in items]), [text for _, text in items]


@dataclass(frozen=True)
class ComposedItem:
    reference: str  # ASIN
    text: str  # "{caption 1} and {caption 2}" (data.formats.fashioniq.composed_query_text)
    target: str
    category: str


class ComposedTriplets:
    """The FashionIQ triplets of `split` in `categories` (test triplets have no target: refused here), with their
    images read once and kept (one tensor per ASIN)."""

    def __init__(self, root: str | os.PathLike, split: str, size: tuple[int, int],
                 categories: Iterable[str] = CATEGORIES, limit: int | None = None):
        loaded = load_fashioniq(root, split, categories)
        if split == "test":
            raise UserError(f"{root}: FashionIQ's test split has no targets; train and score on train / val")
        self.items = [ComposedItem(t.candidate, composed_query_text(t.captions), t.target, category)
                      for category, triplets in loaded.triplets.items() for t in triplets][:limit]
        if not self.items:
            raise UserError(f"{root}: no {split} triplets in {', '.join(categories)}; expected FashionIQ caption files "
                            "listing candidate, target and captions")
        self.galleries = loaded.galleries
        self.size = size
        self._paths = loaded.image_path
        self._images: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.items)

    def image(self, asin: str) -> torch.Tensor:
        """uint8 (3, H, W) of an ASIN's image, read once."""
        if asin not in self._images:
            self._images[asin] = image_tensor(open_rgb(self._paths(asin)), self.size)
        return self._images[asin]

    def batch(self, indices: Iterable[int]) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        """Reference images, query texts and target images of the triplets at `indices`."""
        items = [self.items[index] for index in indices]
        return (torch.stack([self.image(item.reference) for item in items]), [item.text for item in items],
                torch.stack([self.image(item.target) for item in items]))

