"""Readers for FashionIQ (Wu et al. 2021), the composed image retrieval benchmark, as released.

Layout under a root folder:
    captions/cap.{dress,shirt,toptee}.{train,val,test}.json
                        a JSON list of {"candidate": ASIN, "target": ASIN, "captions": [two relative captions]}
                        (the test files have no "target")
    image_splits/split.{dress,shirt,toptee}.{train,val,test}.json
                        a JSON list of ASINs: the gallery of that category and split
    images/<asin>.png or images/<asin>.jpg
Fashion-IQ-Cap caption files (a caption per image) are JSON lists of {"image": ASIN, "caption": text, ...}.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from atelier.data.formats.lists import missing_error
from atelier.data.formats.text import parse_json, read_text
from atelier.errors import UserError

logger = logging.getLogger(__name__)

CATEGORIES = ("dress", "shirt", "toptee")
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg")
ASIN_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # Amazon ASINs (B008BHCT58); nothing that walks out of images/
TRIPLET = '{"candidate": ASIN, "target": ASIN, "captions": [two relative captions]}'


@dataclass(frozen=True)
class Triplet:
    """One composed query: the candidate (reference) image, the target (None in the test split), the two relative
    captions (stripped) and the category."""

    candidate: str
    target: str | None
    captions: tuple[str, str]
    category: str


@dataclass(frozen=True)
class FashionIQSplit:
    """One split of FashionIQ: per category, the triplets and the gallery (the split file's ASINs, in file order)."""

    root: Path
    split: str
    triplets: dict[str, list[Triplet]]
    galleries: dict[str, list[str]]

    def image_path(self, asin: str) -> Path:
        """The image file of `asin` (see `image_path`)."""
        return image_path(self.root, asin)


def _check_names(category: str, split: str) -> None:
    if category not in CATEGORIES or split not in SPLITS:
        raise UserError(f"FashionIQ: unknown category {category!r} or split {split!r}; expected a category among "
                        f"{', '.join(CATEGORIES)} and a split among {', '.join(SPLITS)}")


def caption_file(root: str | os.PathLike, category: str, split: str) -> Path:
    """The path of `captions/cap.{category}.{split}.json` (UserError for an unknown category or split)."""
    _check_names(category, split)
    return Path(root) / "captions" / f"cap.{category}.{split}.json"


def split_file(root: str | os.PathLike, category: str, split: str) -> Path:
    """The path of `image_splits/split.{category}.{split}.json` (UserError for an unknown category or split)."""
    _check_names(category, split)
    return Path(root) / "image_splits" / f"split.{category}.{split}.json"


def _kind(value) -> str:
    """How a JSON value reads in an error: "text", "a number", "an object", "null", ..."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    names = {str: "text", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _json_list(path: Path, what: str, expected: str) -> list:
    """The JSON list a file holds; UserError naming the file when it is not text, not JSON or not a list."""
    data = parse_json(read_text(path, what), f"{path}: not valid JSON; expected {expected}")
    if not isinstance(data, list):
        raise UserError(f"{path}: the file holds {_kind(data)}; expected {expected}")
    return data


def _asin(value, where: str) -> str:
    """`value` as an ASIN (stripped); UserError (`where` names file, entry and key) when it is not one."""
    if not isinstance(value, str) or not ASIN_PATTERN.fullmatch(value.strip()):
        found = repr(value[:40]) if isinstance(value, str) else _kind(value)
        raise UserError(f"{where} is {found}; expected an image ASIN such as B008BHCT58 (letters, digits, . _ -)")
    return value.strip()


def _captions(value, where: str) -> tuple[str, str]:
    """The two relative captions of a triplet, stripped; UserError unless `value` is a list of exactly two texts."""
    if not isinstance(value, list):
        raise UserError(f'{where}: "captions" is {_kind(value)}; expected a list of 2 relative captions')
    if len(value) != 2:
        raise UserError(f'{where}: "captions" has {len(value)} caption{"" if len(value) == 1 else "s"}; '
                        "expected 2 relative captions")
    for number, caption in enumerate(value):
        if not isinstance(caption, str):
            raise UserError(f'{where}: "captions"[{number}] is {_kind(caption)}; expected text')
    return value[0].strip(), value[1].strip()


def read_triplets(root: str | os.PathLike, category: str, split: str) -> list[Triplet]:
    """The triplets of `captions/cap.{category}.{split}.json`, in file order. UserError naming the file and the entry
    for anything but a list of objects with a "candidate" ASIN, two "captions" and, except in the test split (where
    it is optional), a "target" ASIN."""
    path = caption_file(root, category, split)
    triplets = []
    for index, entry in enumerate(_json_list(path, "FashionIQ caption file", f"a JSON list of {TRIPLET}")):
        where = f"{path} entry [{index}]"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: found {_kind(entry)}; expected an object {TRIPLET}")
        for key in ("candidate", "captions") + (() if split == "test" else ("target",)):
            if key not in entry:
                raise UserError(f'{where}: no "{key}"; expected an object {TRIPLET}')
        candidate = _asin(entry["candidate"], f'{where}: "candidate"')
        target = _asin(entry["target"], f'{where}: "target"') if "target" in entry else None
        triplets.append(Triplet(candidate, target, _captions(entry["captions"], where), category))
    return triplets


def read_split(root: str | os.PathLike, category: str, split: str) -> list[str]:
    """The gallery ASINs of `image_splits/split.{category}.{split}.json`, in file order, a repeated ASIN kept once
    (an empty list is an empty gallery: a small FashionSynth draw can leave a category without images in a split).
    UserError naming the file (and the entry) for anything but a JSON list of ASINs."""
    path = split_file(root, category, split)
    entries = _json_list(path, "FashionIQ split file", "a JSON list of image ASINs")
    return list(dict.fromkeys(_asin(entry, f"{path} entry [{index}]") for index, entry in enumerate(entries)))


def image_path(root: str | os.PathLike, asin: str) -> Path:
    """The image of `asin`: `images/<asin>.png`, else `images/<asin>.jpg`; UserError naming the ASIN and the folder
    when neither is a file."""
    folder = Path(root) / "images"
    asin = _asin(asin, "FashionIQ image name")
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{asin}{suffix}").is_file():
            return folder / f"{asin}{suffix}"
    raise UserError(f"FashionIQ image {asin} is missing: neither {asin}.png nor {asin}.jpg is in {folder}; "
                    "add the image or point the root at the FashionIQ folder")


def load_fashioniq(root: str | os.PathLike, split: str, categories: Iterable[str] = CATEGORIES,
                   check_images: bool = True) -> FashionIQSplit:
    """The triplets and galleries of one split, for each of `categories`. UserError when a triplet's candidate or
    target is not in its category's gallery (naming the caption file, the entry and the ASIN), and, when
    check_images, when gallery images are missing from images/ (the first few named, the rest counted)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"FashionIQ root {root} is not a folder; pass the folder holding captions/, image_splits/ "
                        "and images/")
    categories = tuple(categories)
    for category in categories:
        _check_names(category, split)
    on_disk = _images_on_disk(root) if check_images else None
    triplets, galleries = {}, {}
    for category in categories:
        galleries[category] = gallery = read_split(root, category, split)
        triplets[category] = read_triplets(root, category, split)
        _check_in_gallery(root, category, split, triplets[category], set(gallery))
        if on_disk is not None:
            missing = [asin for asin in gallery if asin not in on_disk]
            if missing:
                raise missing_error(split_file(root, category, split), missing, str(root / "images"))
    logger.debug("FashionIQ %s: %s", split, {c: (len(triplets[c]), len(galleries[c])) for c in categories})
    return FashionIQSplit(root, split, triplets, galleries)


def _images_on_disk(root: Path) -> set[str]:
    """The ASINs with a .png or .jpg file in root/images (UserError when that folder is absent)."""
    folder = root / "images"
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; FashionIQ images go in images/<asin>.png or .jpg "
                        "(or pass check_images=False)")
    return {path.stem for path in folder.iterdir() if path.suffix in IMAGE_SUFFIXES and path.is_file()}


def _check_in_gallery(root: Path, category: str, split: str, triplets: list[Triplet], gallery: set[str]) -> None:
    """UserError for the first triplet naming an image that is not in the split's gallery."""
    for index, triplet in enumerate(triplets):
        for key, asin in (("candidate", triplet.candidate), ("target", triplet.target)):
            if asin is not None and asin not in gallery:
                raise UserError(
                    f"{caption_file(root, category, split)} entry [{index}]: {key} {asin} is not in the {category} "
                    f"{split} split ({split_file(root, category, split).name}); use the split files that came with "
                    "these captions"
                )


def composed_query_text(captions: tuple[str, str] | list[str]) -> str:
    """The text of a composed query, as CLIP4Cir and UniFashion build it from a triplet's two relative captions:
    "{first} and {second}", each stripped of surrounding spaces and of leading or trailing ". , ?", the first letter
    of the first caption capitalised (the rest left as written): ("is red.", "has long sleeves") -> "Is red and has
    long sleeves"."""
    first, second = (caption.strip().strip(".?, ") for caption in captions)
    return f"{first[:1].upper()}{first[1:]} and {second}"


def read_caption_file(path: str | os.PathLike) -> dict[str, str]:
    """A Fashion-IQ-Cap caption file as {ASIN: caption (stripped)}, in file order; other keys of an entry are ignored.
    UserError naming the file and the entry for anything but a list of {"image": ASIN, "caption": text} objects, and
    for an image given two different captions."""
    path = Path(path)
    expected = '{"image": ASIN, "caption": text}'
    captions: dict[str, str] = {}
    first_entry: dict[str, int] = {}
    for index, entry in enumerate(_json_list(path, "Fashion-IQ-Cap caption file", f"a JSON list of {expected}")):
        where = f"{path} entry [{index}]"
        if not isinstance(entry, dict) or "image" not in entry or "caption" not in entry:
            raise UserError(f'{where}: expected an object {expected}; found {_kind(entry)}'
                            + (f" with keys {', '.join(sorted(map(str, entry)))[:80]}" if isinstance(entry, dict) else ""))
        asin = _asin(entry["image"], f'{where}: "image"')
        caption = entry["caption"]
        if not isinstance(caption, str):
            raise UserError(f'{where}: "caption" is {_kind(caption)}; expected text')
        if asin in captions and captions[asin] != caption.strip():
            raise UserError(f"{where}: image {asin} already has a different caption (entry [{first_entry[asin]}]); "
                            "keep one")
        captions[asin] = caption.strip()
        first_entry.setdefault(asin, index)
    return captions
