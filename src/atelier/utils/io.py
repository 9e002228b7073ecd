"""Atomic file writes (temp file in the same folder + rename), so an interrupted run never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_image(image, path: str | os.PathLike, **save_kwargs: Any) -> None:
    """Save a PIL image atomically; the format follows the file suffix (JPEG quality 95 unless given)."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower(), None)
    if fmt == "JPEG":
        save_kwargs.setdefault("quality", 95)
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **save_kwargs)


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def prepare_out_dir(path: str | os.PathLike, overwrite: bool, flag: str = "--overwrite") -> Path:
    """Create an output folder; refuse a non-empty existing one unless overwrite is set."""
    from atelier.errors import UserError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output path {path} exists and is a file; expected a folder (choose another --out)")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise UserError(f"output folder {path} exists and is not empty; pass {flag} to write into it, or choose another folder")
    path.mkdir(parents=True, exist_ok=True)
    return path
