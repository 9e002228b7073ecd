"""List files (`train.lst`, `test.lst`, `data.list_file`): image names, one a line, restricting a folder or a split.

A name the list gives must be there: a list naming images that are missing is an error that lists the first few,
never a silent drop (a list from another copy of the data would otherwise train on whatever happens to match).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from atelier.data.formats.text import text_lines
from atelier.errors import UserError

T = TypeVar("T")
MAX_LISTED = 5


def read_list(path: str | os.PathLike) -> list[str]:
    """The names of a list file, one per non-blank line (surrounding spaces dropped), in file order."""
    return [line for _, line in text_lines(path, "list file (image names, one a line)")]


def missing_error(path: str | os.PathLike, missing: list[str], where: str, flag: str | None = None) -> UserError:
    """The one error for listed names with no image: the first few named, the rest counted, and how to fix it."""
    shown = ", ".join(missing[:MAX_LISTED]) + (f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else "")
    label = f"{flag} {path}" if flag else str(path)
    return UserError(f"{label}: {len(missing)} listed images are missing from {where}: {shown}; "
                     "add the images or remove their lines from the list")


def select_listed(items: Iterable[T], list_file: str | os.PathLike | None,
                  path: Callable[[T], str | os.PathLike] = lambda item: item, flag: str = "data.list_file",
                  where: str = "the data folder") -> list[T]:
    """The items whose file (`path(item)`) the list names, matched by name without suffix, in the items' order; all
    items without a list. UserError (naming `flag`) when the list names an image that no item is."""
    items = list(items)
    if not list_file:
        return items
    wanted = list(dict.fromkeys(Path(name).stem for name in read_list(list_file)))
    have = {Path(path(item)).stem for item in items}
    missing = [name for name in wanted if name not in have]
    if missing:
        raise missing_error(list_file, missing, where, flag)
    chosen = set(wanted)
    return [item for item in items if Path(path(item)).stem in chosen]
