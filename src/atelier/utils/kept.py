"""Models kept loaded between calls in one long-lived process (the web app, `atelier app`).

The commands load their models through `kept(load, *args, **kwargs)`. On the command line nothing is kept and it is
just `load(*args, **kwargs)`; once a process calls `keep_models(n)`, the last `n` distinct loads are kept, keyed by
the loader and its arguments (a path argument also by its modification time, so a checkpoint trained again is
loaded again), and a second call with the same arguments returns the same object without touching the disk.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_kept: OrderedDict[tuple, Any] = OrderedDict()
_capacity = 0  # 0: keep nothing (the command line)


def keep_models(capacity: int) -> None:
    """Keep the last `capacity` loaded models from now on (0: keep none, and drop those kept)."""
    global _capacity
    if capacity < 0:
        raise ValueError(f"capacity {capacity}: expected >= 0")
    with _lock:
        _capacity = capacity
        while len(_kept) > capacity:
            _kept.popitem(last=False)


def kept_count() -> int:
    """How many models are kept now."""
    return len(_kept)


def _stamp(value: Any) -> Any:
    """A hashable stand-in for an argument: paths with their modification time, everything else by repr."""
    if isinstance(value, (str, os.PathLike)):
        path = Path(value).expanduser()
        try:
            return (str(value), path.stat().st_mtime_ns)
        except (OSError, ValueError):
            return str(value)
    return repr(value)


def kept(load: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`load(*args, **kwargs)`, or the object an earlier identical call returned while models are kept. Loads run
    one at a time, so two requests for one model load it once."""
    if _capacity == 0:
        return load(*args, **kwargs)
    key = (load.__module__, load.__qualname__, tuple(map(_stamp, args)),
           tuple(sorted((name, _stamp(value)) for name, value in kwargs.items())))
    with _lock:
        if key in _kept:
            _kept.move_to_end(key)
            return _kept[key]
        value = load(*args, **kwargs)
        _kept[key] = value
        while len(_kept) > _capacity:
            _kept.popitem(last=False)
        return value
