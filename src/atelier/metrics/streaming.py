"""Bounded, ordered, threaded image loading and the multi-process split of an evaluation.

Decoding and resizing run in a thread pool (PIL and numpy release the GIL) with at most `window` images in flight,
so memory stays bounded however large the set. Under `accelerate launch` (WORLD_SIZE > 1) each rank takes every
`world_size`-th item, and per-image values and feature statistics are gathered with accelerate's helpers; a plain
single-process run never imports accelerate.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Loader threads: the CPU count, at most 16."""
    return max(1, min(16, os.cpu_count() or 1))


def threaded_map(items: Iterable[T], fn: Callable[[T], R], workers: int, window: int) -> Iterator[R]:
    """Apply `fn` to items in a thread pool, yielding results in order with at most `window` pending."""
    iterator = iter(items)
    if workers <= 1:
        yield from map(fn, iterator)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="atelier-eval") as pool:
        pending = deque(pool.submit(fn, item) for item in islice(iterator, window))
        while pending:
            result = pending.popleft().result()
            for item in islice(iterator, 1):
                pending.append(pool.submit(fn, item))
            yield result


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass
class Ranks:
    """Where this process stands in a (possibly) multi-process run."""

    index: int = 0
    count: int = 1
    state: object | None = None  # accelerate.PartialState when distributed

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share: every count-th item starting at index."""
        return list(items[self.index :: self.count])

    def gather(self, values: list) -> list:
        """Concatenate a per-rank list across ranks (identity when single-process)."""
        if self.count == 1:
            return values
        from accelerate.utils import gather_object

        return list(gather_object(values))

    def device(self, requested: str) -> str:
        """The device this rank should use: its own GPU under accelerate, else the requested one."""
        if self.state is not None and requested.startswith("cuda"):
            return str(self.state.device)
        return requested


def current_ranks() -> Ranks:
    """Ranks of this process: accelerate's PartialState when launched with several processes, else a single rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Ranks()
    from accelerate import PartialState

    state = PartialState()
    return Ranks(state.process_index, state.num_processes, state)
