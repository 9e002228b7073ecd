"""Timing and peak memory of callables measured side by side: warm-up once each, then interleaved repeats, median.

Peak memory of one call = the bytes of the weights it runs (parameters and buffers of its modules) + the peak growth
of memory during the call over what was in use just before it:
- CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, less `memory_allocated` before the call;
- CPU (Linux): the process's peak resident set (VmHWM), reset before the call by writing 5 to /proc/self/clear_refs,
  less the resident set before it, after glibc's `malloc_trim` has returned freed heap pages, so memory a previous call
  freed but the allocator kept cannot hide this call's growth. Where either is unavailable the peak is None ("n/a").
"""

from __future__ import annotations

import ctypes
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch


@dataclass
class Measured:
    """Median seconds of the timed calls, each call's seconds, the first call's seconds and the peak memory (bytes)."""

    seconds: float
    runs: list[float] = field(default_factory=list)
    warmup_s: float = 0.0
    peak_bytes: int | None = None


def weight_bytes(modules: Iterable[torch.nn.Module]) -> int:
    """Bytes of the parameters and buffers of `modules` (each tensor counted once)."""
    seen, total = set(), 0
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.data_ptr() not in seen and tensor.device.type != "meta":
                seen.add(tensor.data_ptr())
                total += tensor.numel() * tensor.element_size()
    return total


def backend_flags_restorer() -> Callable[[], None]:
    """A function putting torch's process-wide CUDA math flags (TF32 matmul and convolution, cuDNN autotuning) back as
    they are now. `apply_speed` sets them for the whole process, so each side re-sets its own before every call."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9; reading the legacy flags after this API was used raises
        state = (matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.benchmark)

        def restore() -> None:
            matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.benchmark = state
    else:
        state = (matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)

        def restore() -> None:
            matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = state
    return restore


def under(flags: Callable[[], None], work: Callable[[], object]) -> Callable[[], object]:
    """`work` preceded by `flags()` (setting the backend flags it is measured under; microseconds)."""
    def run() -> object:
        flags()
        return work()

    return run


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ":"))


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakGrowth:
    """Context manager: `.bytes` = the peak memory growth during the block on `device` (None if unmeasurable)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.bytes: int | None = None
        self._before = 0

    def __enter__(self) -> "PeakGrowth":
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
            return self
        try:
            _trim_heap()
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # resets VmHWM to the current resident set (Linux >= 4.0)
            self._before = _status_kb("VmRSS") * 1024
        except (OSError, StopIteration):
            self._before = -1
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._before
        elif self._before >= 0:
            self.bytes = max(_status_kb("VmHWM") * 1024 - self._before, 0)


def time_call(work: Callable[[], object], device: torch.device) -> tuple[float, int | None]:
    """(seconds, peak growth bytes) of one call of `work`, synchronized on CUDA."""
    with PeakGrowth(device) as peak:
        synchronize(device)
        started = time.perf_counter()
        work()
        synchronize(device)
        seconds = time.perf_counter() - started
    return seconds, peak.bytes


def side_by_side(calls: dict[str, Callable[[], object]], weights: dict[str, int], device: torch.device,
                 repeats: int, warmups: dict[str, Callable[[], object]] | None = None) -> dict[str, Measured]:
    """Warm every call up once (or its `warmups` stand-in), then time them interleaved `repeats` times; medians."""
    results = {}
    for name, work in calls.items():
        seconds, _ = time_call((warmups or {}).get(name, work), device)
        results[name] = Measured(0.0, warmup_s=seconds)
    peaks: dict[str, list[int | None]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, work in calls.items():
            seconds, peak = time_call(work, device)
            results[name].runs.append(seconds)
            peaks[name].append(peak)
    for name, measured in results.items():
        measured.seconds = statistics.median(measured.runs)
        known = [p for p in peaks[name] if p is not None]
        measured.peak_bytes = weights[name] + max(known) if known else None
    return results
