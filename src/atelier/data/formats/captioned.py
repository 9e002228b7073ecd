"""Captioned image folders, the three layouts the ecosystem uses (docs/data-formats.md, "Style folders").

Captions come, in order of precedence, from:
1. `metadata.jsonl` at the root, one JSON object per line with `file_name` (relative to the root) and `text`
   (the Hugging Face imagefolder convention);
2. a `.txt` file beside each image with the same stem (the kohya convention);
3. when the folder has neither: WikiArt-style names `<Style>/<artist-name>_<title-words>.jpg`, whose title words
   become the caption (`claude-monet_water-lilies-1916.jpg` -> "water lilies 1916").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from atelier.data.formats.text import parse_json, read_text, text_lines
from atelier.errors import UserError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
METADATA_NAME = "metadata.jsonl"
MAX_LISTED = 5


@dataclass(frozen=True)
class CaptionedImage:
    """One image file and its caption (prefix included)."""

    path: Path
    caption: str


def list_images(root: Path, recursive: bool = True) -> list[Path]:
    """Image files (jpg jpeg png webp bmp, any case) under root, hidden files skipped, sorted by path."""
    candidates = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        p for p in candidates
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )  # fmt: skip


def read_metadata(root: Path) -> dict[Path, str]:
    """Read root/metadata.jsonl into {image path: text}, checking JSON, fields and that each image exists in root."""
    path = root / METADATA_NAME
    expected = '{"file_name": ..., "text": ...}'
    captions: dict[Path, str] = {}
    for number, line in text_lines(path, f"{METADATA_NAME} (one {expected} per line)"):
        record = parse_json(line, f"{path}, line {number}: not valid JSON; expected {expected}")
        for field_name in ("file_name", "text"):
            if not isinstance(record, dict) or not isinstance(record.get(field_name), str):
                raise UserError(f"{path}, line {number}: missing string field {field_name!r}; expected {expected}")
        captions[_metadata_image(root, path, number, record["file_name"])] = record["text"].strip()
    return captions


def _metadata_image(root: Path, path: Path, number: int, name: str) -> Path:
    """The image a metadata line's file_name names: a file inside root (relative, no NUL, no way out by `..`)."""
    fix = "fix the name or add the image"
    image = root / name
    try:
        inside = not Path(name).is_absolute() and image.resolve().is_relative_to(root.resolve())
        found = inside and image.is_file()
    except (OSError, ValueError):  # a name too long for the file system, or holding a NUL
        inside = found = False
    if not inside:
        raise UserError(f"{path}, line {number}: file_name {name[:80]!r} is not a path inside {root}; {fix}")
    if not found:
        raise UserError(f"{path}, line {number}: file_name {name[:80]!r} names no image in {root}; {fix}")
    return image


def wikiart_caption(image: Path) -> str | None:
    """Title words of a WikiArt name `<artist-name>_<title-words>.jpg` ("water lilies 1916"), or None if not one."""
    artist, separator, title = image.stem.partition("_")
    words = " ".join(title.replace("-", " ").replace("_", " ").split())
    return words if separator and artist and words else None


def _sidecar_caption(image: Path) -> str | None:
    """Caption from the `.txt` beside the image (kohya), or None when there is none or it is empty."""
    sidecar = image.with_suffix(".txt")
    if not sidecar.is_file():
        return None
    return read_text(sidecar, "caption (.txt beside the image)").strip() or None


def _uncaptioned_error(root: Path, missing: list[Path], mode: str) -> UserError:
    """The one error for images without captions: up to 5 named, the rest counted, and how to fix it."""
    listed = ", ".join(str(p.relative_to(root)) for p in missing[:MAX_LISTED])
    more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
    return UserError(
        f"{root}: {len(missing)} images have no caption ({mode}): {listed}{more}; add them to {METADATA_NAME}, "
        f"put a .txt caption beside each, or name them <artist-name>_<title-words>.jpg"
    )


def read_captioned_folder(root: str | os.PathLike, caption_prefix: str = "", recursive: bool = True) -> list[CaptionedImage]:
    """Read a captioned image folder (metadata.jsonl, .txt sidecars or WikiArt names), sorted by path.

    The prefix is prepended as is, so include your own separator: "A Monet painting, ".
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"captioned folder {root} does not exist or is not a folder; check the path")
    images = list_images(root, recursive)
    if not images:
        raise UserError(f"{root}: no images found (expected {', '.join(IMAGE_SUFFIXES)} files); check the folder")
    metadata = read_metadata(root) if (root / METADATA_NAME).is_file() else {}
    sidecars = {image: caption for image in images if (caption := _sidecar_caption(image)) is not None}
    if metadata or sidecars:
        captions = {**sidecars, **metadata}
        mode = f"captions come from {METADATA_NAME} or .txt files"
    else:
        captions = {image: caption for image in images if (caption := wikiart_caption(image)) is not None}
        mode = "no metadata.jsonl or .txt captions, and names are not <artist-name>_<title-words>"
    missing = [image for image in images if image not in captions]
    if missing:
        raise _uncaptioned_error(root, missing, mode)
    logger.debug("%s: %d captioned images", root, len(images))
    return [CaptionedImage(image, caption_prefix + captions[image]) for image in images]
