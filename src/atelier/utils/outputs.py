"""Output-folder safety, checked before any work: the marker that says "atelier wrote this folder", writability, and
outputs that would land on the inputs.

The marker (`.atelier-run.json`, written when a command creates its output folder) is what makes a folder safe to
delete or rewrite with `--overwrite`: a non-empty folder without one may be a dataset or someone's files, and is
refused. Every command that owns an output folder uses `write_marker` / `check_overwritable` from here.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from atelier.errors import UserError

MARKER = ".atelier-run.json"


def write_marker(folder: str | os.PathLike, command: str, **fields: Any) -> None:
    """Mark `folder` as written by `atelier COMMAND` (fields: e.g. task=...); creates the folder."""
    from atelier import __version__
    from atelier.utils.io import write_json

    write_json(Path(folder) / MARKER, {"tool": "atelier", "version": __version__, "command": command, **fields})


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of `folder` as a dict, or None when there is none (or it is not a JSON object)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_empty_folder(folder: Path) -> bool:
    return folder.is_dir() and not any(folder.iterdir())


def check_overwritable(folder: str | os.PathLike, command: str, flag: str = "--out") -> None:
    """Refuse to write into (or, with --overwrite, delete) a non-empty folder that `atelier COMMAND` did not write: no
    marker, or another command's."""
    folder = Path(folder)
    if not folder.exists() or is_empty_folder(folder):
        return
    check_folder_path(folder, flag)
    marker = read_marker(folder)
    if marker is None:
        raise UserError(f"{flag} {folder} is not empty and not an atelier output (no {MARKER} in it), so it may "
                        "hold data: refused, --overwrite replaces only atelier outputs; choose a new or empty folder")
    if marker.get("command") != command:
        raise UserError(f"{flag} {folder} holds the output of `atelier {marker.get('command')}`, not of `atelier "
                        f"{command}`: refused; choose another folder")


def check_folder_path(folder: str | os.PathLike, flag: str) -> None:
    """`folder` (existing or not) can be an output folder: neither it nor a parent is a file, and it is writable."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file; expected a folder (choose another {flag})")
    _check_writable_parent(folder, flag)


def check_file_path(path: str | os.PathLike, flag: str) -> None:
    """`path` can be written as a file: it is not a folder, its folder can be created and is writable."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; expected a file name, e.g. {path / 'report.json'}")
    _check_writable_parent(path.parent, flag, shown=path)


def _check_writable_parent(folder: Path, flag: str, shown: Path | None = None) -> None:
    """The nearest existing folder at or above `folder` is a folder we can create a file in (a real probe: it catches
    read-only mounts and, for root, what permission bits alone would not)."""
    shown = shown or folder
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {shown}: {existing} is a file, expected a folder; choose another {flag}")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".atelier-probe-"):
            pass
    except OSError as error:
        raise UserError(f"{flag} {shown}: cannot write in {existing} ({error.strerror}); choose a writable location "
                        "or fix its permissions") from None


def check_outside(out: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike]], flag: str = "--out") -> None:
    """Refuse an output folder that equals or contains an input (name, path): writing there, let alone
    `--overwrite`, would mix outputs into (or delete) what is read. Inputs that do not exist are skipped."""
    out = Path(out).resolve()
    for name, value in inputs:
        if not str(value) or not Path(value).exists():
            continue
        path = Path(value).resolve()
        if path == out or out in path.parents:
            where = "is" if path == out else "contains"
            raise UserError(f"{flag} {out} {where} {name} ({value}); choose an output folder outside the inputs")
