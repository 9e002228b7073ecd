"""Checking what a browser uploads before any work: size on disk, that it is an image (or the file kind asked for)
and that its pixel size is sane; then copying it into the request folder under a safe name.

gradio hands a handler that runs with `preprocess=False` the upload as a dict ({"path": temp file, "orig_name": the
user's file name, ...}), a list of them, or None; every function here takes that form (or a plain path).
"""

from __future__ import annotations

import re
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from atelier.data.formats.captioned import IMAGE_SUFFIXES
from atelier.errors import UserError

MIN_SIDE = 8


@dataclass(frozen=True)
class Limits:
    """What an upload may be: bytes per file, pixels per image side, bytes unpacked from one zip."""

    max_bytes: int = 20 * 1024 * 1024
    max_side: int = 4096
    max_unzipped_bytes: int = 1024 * 1024 * 1024

    @property
    def max_megabytes(self) -> float:
        return self.max_bytes / (1024 * 1024)


def source_of(upload: Any) -> tuple[Path, str] | None:
    """(file on disk, the name the user gave it) of one upload, None when nothing was uploaded."""
    if upload is None or upload == "":
        return None
    if isinstance(upload, dict):
        path = upload.get("path")
        if not path:
            return None
        return Path(path), str(upload.get("orig_name") or Path(path).name)
    return Path(upload), Path(upload).name


def sources_of(uploads: Any) -> list[tuple[Path, str]]:
    """Every upload of a multi-file field, in order."""
    if uploads is None:
        return []
    items = uploads if isinstance(uploads, list) else [uploads]
    return [source for source in map(source_of, items) if source is not None]


def safe_name(name: str, default: str = "upload") -> str:
    """A file name that is safe in any folder: the last path part, characters outside [A-Za-z0-9._-] replaced."""
    name = PurePosixPath(name.replace("\\", "/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return cleaned or default


def _check_bytes(path: Path, what: str, name: str, limits: Limits) -> None:
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise UserError(f"{what} {name}: {size / 2**20:.1f} MB is over the upload limit of {limits.max_megabytes:g} MB; "
                        "upload a smaller file (the limit is `atelier app --max-upload-mb`)")
    if size == 0:
        raise UserError(f"{what} {name}: the file is empty; upload the image again")


def check_image_file(path: Path, what: str, name: str, limits: Limits) -> str:
    """UserError unless `path` is a readable image within the limits; returns its suffix (from its real format)."""
    from PIL import Image, UnidentifiedImageError

    _check_bytes(path, what, name, limits)
    try:
        with Image.open(path) as image:
            width, height = image.size
            kind = (image.format or "png").lower()
            if max(width, height) > limits.max_side:
                raise UserError(f"{what} {name}: {width}x{height} px is larger than {limits.max_side} px a side; "
                                "downscale it first")
            if min(width, height) < MIN_SIDE:
                raise UserError(f"{what} {name}: {width}x{height} px is smaller than {MIN_SIDE} px a side; upload a "
                                "real photo")
            image.load()
    except Image.DecompressionBombError:
        raise UserError(f"{what} {name}: the image is far larger than {limits.max_side} px a side; downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = "not an image" if isinstance(error, UnidentifiedImageError) else f"damaged ({error})"
        raise UserError(f"{what} {name}: {reason}; upload a .png, .jpg, .webp or .bmp image") from None
    return {"jpeg": ".jpg", "mpo": ".jpg"}.get(kind, f".{kind}")


def image_upload(upload: Any, what: str, into: Path, limits: Limits) -> Path:
    """Check one image upload and copy it into folder `into` under its own (safe) name; UserError naming `what` when
    nothing was uploaded or the file is not a usable image."""
    source = source_of(upload)
    if source is None:
        raise UserError(f"{what}: no image uploaded; drop an image on the {what} field first")
    path, name = source
    suffix = check_image_file(path, what, name, limits)
    into.mkdir(parents=True, exist_ok=True)
    target = into / (Path(safe_name(name, "image")).stem + suffix)
    shutil.copyfile(path, target)
    return target


def text_upload(upload: Any, what: str, into: Path, limits: Limits, suffixes: tuple[str, ...], expected: str) -> Path | None:
    """Check a text file upload (size, suffix, UTF-8) and copy it into `into`; None when nothing was uploaded."""
    source = source_of(upload)
    if source is None:
        return None
    path, name = source
    _check_bytes(path, what, name, limits)
    if Path(name).suffix.lower() not in suffixes:
        raise UserError(f"{what} {name}: expected {expected} ({' or '.join(suffixes)})")
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {name}: not UTF-8 text; expected {expected}") from None
    into.mkdir(parents=True, exist_ok=True)
    target = into / safe_name(name, "upload" + suffixes[0])
    shutil.copyfile(path, target)
    return target


def image_folder(uploads: Any, what: str, into: Path, limits: Limits) -> Path:
    """The images of a multi-file field (images and/or .zip files of images) in folder `into`, each checked; names
    are kept (the protocols match files by name), so two files of one name are refused."""
    sources = sources_of(uploads)
    if not sources:
        raise UserError(f"{what}: nothing uploaded; add its images, or one .zip of them")
    into.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    def add(name: str, where: str) -> Path:
        target = into / safe_name(name, "image.png")
        if target.name in written:
            raise UserError(f"{what}: {where} and {written[target.name]} are both named {target.name}; names must be "
                            "unique (outputs are matched to ground truth by name)")
        written[target.name] = where
        return target

    for path, name in sources:
        if Path(name).suffix.lower() == ".zip":
            _unzip_images(path, name, what, limits, add)
        else:
            check_image_file(path, what, name, limits)
            shutil.copyfile(path, add(name, name))
    if not written:
        raise UserError(f"{what}: no images found in the upload (expected {', '.join(IMAGE_SUFFIXES)} files)")
    return into


def _unzip_images(path: Path, name: str, what: str, limits: Limits, add) -> None:
    """Copy the images of zip `path` (any folder inside; other files ignored) through `add`, each checked, refusing
    archives that unpack to more than the limit."""
    _check_bytes(path, what, name, limits)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise UserError(f"{what} {name}: not a readable .zip file") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir() and PurePosixPath(m.filename).suffix.lower() in IMAGE_SUFFIXES
                   and not PurePosixPath(m.filename).name.startswith(".")]
        total = sum(member.file_size for member in members)
        if total > limits.max_unzipped_bytes:
            raise UserError(f"{what} {name}: unpacks to {total / 2**20:.0f} MB, over the {limits.max_unzipped_bytes / 2**20:.0f} MB "
                            "limit for one zip; split it")
        for member in members:
            if member.file_size > limits.max_bytes:
                raise UserError(f"{what} {name}: {member.filename} is {member.file_size / 2**20:.1f} MB, over the upload "
                                f"limit of {limits.max_megabytes:g} MB per image")
            member_name = PurePosixPath(member.filename).name
            target = add(member_name, f"{name}:{member.filename}")
            try:
                with archive.open(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
                raise UserError(f"{what} {name}: {member.filename} could not be unpacked ({error})") from None
            check_image_file(target, what, f"{name}:{member.filename}", limits)
