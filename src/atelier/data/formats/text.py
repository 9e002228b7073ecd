"""The one way the readers open a text file (pair and annotation CSVs, list files, captions, metadata.jsonl, keypoint
JSON): whole, as UTF-8 (a byte-order mark is dropped), with one UserError naming the file for everything that makes
it unreadable as text, so no reader lets an OSError or a UnicodeDecodeError escape as a traceback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from atelier.errors import UserError


def read_text(path: str | os.PathLike, what: str) -> str:
    """The text of `path` (`what` says which file it should be, e.g. "pairs CSV"); UserError when it is missing, a
    folder, unreadable, not UTF-8, or binary (a NUL byte)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found; check the path") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; expected the {what} file") from None
    except OSError as error:
        raise UserError(f"{path}: the {what} could not be read ({error.strerror or error}); check the file") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise UserError(f"{path}, line {line}: the {what} is not UTF-8 text (byte {data[error.start]:#04x} at offset "
                        f"{error.start}); save it as UTF-8") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise UserError(f"{path}, line {line}: the {what} holds a NUL byte, so it is not a text file; check the file")
    return text


def text_lines(path: str | os.PathLike, what: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) of every non-blank line of a text file (read as `read_text`)."""
    for number, line in enumerate(read_text(path, what).splitlines(), start=1):
        line = line.strip()
        if line:
            yield number, line


def parse_json(text: str, message: str):
    """`text` as JSON; else UserError(`message` + the reason), also for JSON nested too deeply or holding an integer too
    long for Python to convert (errors json.loads raises as other types). `message` names the file and what it expects."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{message} ({error.msg} at column {error.colno})") from None
    except (ValueError, RecursionError) as error:
        raise UserError(f"{message} ({type(error).__name__})") from None
