"""Atomic file writes (temp file in the same folder + rename), so an interrupted run never leaves half a file."""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _create_temp_beside(path: Path) -> Path:
    """Create an empty hidden file `.NAME.RANDOM.tmp.SUFFIX` beside `path` and return its path.

    Created with mode 0o666 as a plain open() would, so the umask alone decides the final file's permissions
    (tempfile.mkstemp's 0600 would make every model and report unreadable to other users). The hidden
    `.*.tmp.*` name is what listings skip when an interrupted write leaves one behind."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_beside(path)
    mode = os.stat(tmp).st_mode & 0o7777  # what the umask allows; a writer that recreates the file (safetensors
    try:  # writes its own 0600 file) gets it back before the rename
        yield Path(tmp)
        os.chmod(tmp, mode)
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
