"""Reader for FashionGen (Rostamzadeh et al. 2018) as released: one HDF5 file per split,
`fashiongen_256_256_{train,validation}.h5`, holding
    input_image         N x 256 x 256 x 3 uint8
    input_description, input_name, input_category, input_subcategory, input_productID
                        a row per image: fixed-length byte strings of shape (N, 1) ((N,) accepted too); the product ID
                        may be stored as an integer
    index, ...          other datasets, not read here
The file is read lazily, a row at a time: the train file is about 17 GB and is never loaded whole.
"""

from __future__ import annotations

import operator
import os
from pathlib import Path

import numpy as np
from PIL import Image

from atelier.errors import UserError

IMAGE_KEY = "input_image"
TEXT_KEYS = ("input_description", "input_name", "input_category", "input_subcategory", "input_productID")
# What h5py raises for a file it cannot parse or a dataset it cannot read (HDF5's own errors arrive as these).
H5_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError)


def _reason(error: BaseException) -> str:
    """The first line of a library error, short enough for a one-line message."""
    text = str(error.args[0] if error.args else "")  # args[0]: a KeyError's str() adds quotes
    return (text.strip().splitlines() or [type(error).__name__])[0][:120]


def _decode(value: bytes) -> str:
    """Bytes as text: UTF-8, else Latin-1 (how the released FashionGen strings are encoded), which reads any byte."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


class FashionGenH5:
    """One FashionGen HDF5 file, open for reading. On opening it checks that the file is HDF5, that `input_image` is
    an (N, H, W, 3) uint8 dataset and that each text dataset present has N rows; each refusal is a UserError naming
    the file and the key. Items are read one at a time. Use as a context manager, or call close()."""

    def __init__(self, path: str | os.PathLike):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: FashionGen HDF5 file not found; pass a file such as fashiongen_256_256_train.h5")
        try:
            self._file = h5py.File(self.path, "r")
        except H5_ERRORS as error:
            raise UserError(f"{self.path}: not a readable HDF5 file ({_reason(error)}); expected a FashionGen file "
                            "such as fashiongen_256_256_train.h5") from None
        try:
            self._images = self._dataset(IMAGE_KEY)
            self._length = self._check_images()
            self._texts = {key: self._dataset(key) for key in TEXT_KEYS}
            for key, dataset in self._texts.items():
                if dataset is not None:
                    self._check_text(key, dataset)
        except BaseException:
            self._file.close()
            raise

    def _dataset(self, key: str):
        """The dataset `key`, or None when the file has no such key; UserError when it is a group or unreadable."""
        import h5py

        try:
            node = self._file[key] if key in self._file.keys() else None
        except H5_ERRORS as error:
            raise UserError(f"{self.path}: key {key} could not be read ({_reason(error)}); the file is damaged") from None
        if node is not None and not isinstance(node, h5py.Dataset):
            raise UserError(f"{self.path}: {key} is a group; expected a dataset (a FashionGen file from the release)")
        return node

    def _check_images(self) -> int:
        """The number of images; UserError unless input_image is an (N, H, W, 3) uint8 dataset."""
        if self._images is None:
            raise UserError(f"{self.path}: no dataset {IMAGE_KEY} (the N x 256 x 256 x 3 uint8 images); expected a "
                            "FashionGen file such as fashiongen_256_256_train.h5")
        shape, dtype = self._describe(IMAGE_KEY, self._images)
        if len(shape) != 4 or shape[3] != 3 or 0 in shape[1:3] or dtype != np.uint8:
            raise UserError(f"{self.path}: {IMAGE_KEY} is {dtype} of shape {shape}; expected N x H x W x 3 uint8 "
                            "RGB images")
        return shape[0]

    def _describe(self, key: str, dataset) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) of a dataset; UserError when the file's header for it is damaged."""
        try:
            return tuple(dataset.shape or ()), dataset.dtype
        except H5_ERRORS as error:
            raise UserError(f"{self.path}: {key} could not be read ({_reason(error)}); the file is damaged") from None

    def _check_text(self, key: str, dataset) -> None:
        """UserError unless a text dataset holds strings (or integers, for the product ID) in N or N x 1 rows."""
        import h5py

        shape, dtype = self._describe(key, dataset)
        if shape not in ((self._length,), (self._length, 1)):
            raise UserError(f"{self.path}: {key} has shape {shape}; expected ({self._length}, 1) or ({self._length},), "
                            f"a row per image of {IMAGE_KEY}")
        text = dtype.kind == "S" or h5py.check_string_dtype(dtype) is not None
        if not (text or (key == "input_productID" and dtype.kind in "iu")):
            raise UserError(f"{self.path}: {key} holds {dtype}; expected byte strings")

    def __len__(self) -> int:
        return self._length

    def __enter__(self) -> FashionGenH5:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (again: nothing happens)."""
        self._file.close()

    def _row(self, key: str, dataset, index) -> np.ndarray:
        """Row `index` of a dataset; UserError for an index out of range, a closed file or a damaged row."""
        try:
            index = operator.index(index)
        except TypeError:
            raise UserError(f"{self.path}: item index {index!r} is not an integer") from None
        if not 0 <= index < self._length:
            raise UserError(f"{self.path}: no item {index}; the file holds {self._length} items (0 to {self._length - 1})")
        if not self._file.id.valid:
            raise UserError(f"{self.path}: the file was closed; open it again to read {key}")
        try:
            return dataset[index]
        except H5_ERRORS as error:
            raise UserError(f"{self.path}: {key}[{index}] could not be read ({_reason(error)}); the file is damaged") from None

    def image(self, index: int) -> Image.Image:
        """Image `index` as an RGB PIL image."""
        return Image.fromarray(np.ascontiguousarray(self._row(IMAGE_KEY, self._images, index)), "RGB")

    def _text(self, key: str, index: int, what: str) -> str:
        """Row `index` of text dataset `key` as stripped text; UserError naming key and file when the file lacks it."""
        dataset = self._texts[key]
        if dataset is None:
            raise UserError(f"{self.path}: no dataset {key}, so no {what}; use a FashionGen file that has it")
        value = self._row(key, dataset, index)
        if isinstance(value, np.ndarray):  # an (N, 1) dataset: the row is a one-element array
            value = value[0]
        return (_decode(value) if isinstance(value, bytes) else str(value)).strip()

    def description(self, index: int) -> str:
        """The product description of item `index` (input_description)."""
        return self._text("input_description", index, "descriptions")

    def name(self, index: int) -> str:
        """The product name of item `index` (input_name)."""
        return self._text("input_name", index, "product names")

    def category(self, index: int) -> str:
        """The category of item `index` (input_category), e.g. "DRESSES"."""
        return self._text("input_category", index, "categories")

    def subcategory(self, index: int) -> str:
        """The sub-category of item `index` (input_subcategory)."""
        return self._text("input_subcategory", index, "sub-categories")

    def product_id(self, index: int) -> str:
        """The product ID of item `index` (input_productID), as text; the images of one product share it."""
        return self._text("input_productID", index, "product IDs")
