"""The one progress-bar helper: tqdm on stderr, switched off by ATELIER_NO_PROGRESS=1, quiet on non-zero ranks."""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    if os.environ.get("ATELIER_NO_PROGRESS", "") not in ("", "0"):
        return False
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "", enabled: bool = True, **kwargs):
    """Wrap an iterable (or make a manual bar when iterable is None) in a tqdm bar that can be switched off."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not (enabled and progress_enabled()), dynamic_ncols=True, leave=False, **kwargs)
