"""`atelier demo`: the main job on the embedded default (FashionSynth + tiny models), one stage per task."""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Callable

from atelier.demo.context import DemoContext
from atelier.demo.report import write_report
from atelier.demo.results import StageResult

logger = logging.getLogger(__name__)


def _stages() -> dict[str, Callable[[DemoContext], StageResult]]:
    from atelier.demo.base import run_base
    from atelier.demo.illustrate import run_illustrate
    from atelier.demo.mcld import run_mcld
    from atelier.demo.pose import run_pose
    from atelier.demo.retrieval import run_retrieval
    from atelier.demo.style import run_style
    from atelier.demo.tryon import run_design, run_tryon

    return {"base": run_base, "style": run_style, "pose": run_pose, "mcld": run_mcld, "illustrate": run_illustrate, "retrieval": run_retrieval,
            "tryon": run_tryon, "design": run_design}


# Stages a plain `atelier demo` runs. tryon and design run only when named (--task tryon): try-on needs 900 training
# steps (about 15 minutes) to draw the garment's colour better than pasting it, beyond the 10 minutes of the other six
# (docs/tryon.md, "Embedded default").
OPT_IN = ("tryon", "design")


def task_names() -> list[str]:
    """The demo's stages, in the order a full run takes them (the opt-in ones last)."""
    return list(_stages())


def default_workers(stages: int) -> int:
    """Stages run side by side: one per CPU core, at most 4 and at most one per stage. The tiny models gain less than
    2x from a second thread (an MCLD step 1.3x), so on this project's 2-core machine two single-threaded stages at a
    time beat one two-threaded stage: 542 s against 662-805 s for the six stages (docs/demo.md, "Time")."""
    return max(1, min(stages, len(os.sched_getaffinity(0)), 4))


def run_demo(out: str | Path = "runs/demo", tasks: list[str] | None = None, fast: bool = False,
             from_scratch: bool = False, workers: int | None = None) -> Path:
    """Run the chosen demo stages (all by default) and write OUT/report.html; return its path. from_scratch: train the
    tiny base here (at 64x48) instead of starting from the embedded FashionSynth base (at 96x64). workers: stages run
    side by side in that many processes, the CPU cores shared among them (default_workers when None)."""
    import torch

    stages = _stages()
    names = list(dict.fromkeys(tasks or [name for name in stages if name not in OPT_IN]))
    workers = default_workers(len(names)) if workers is None else max(1, min(int(workers), len(names)))
    threads = max(1, len(os.sched_getaffinity(0)) // workers) if workers > 1 else torch.get_num_threads()
    Path(out).mkdir(parents=True, exist_ok=True)
    started = time.time()
    if workers == 1:
        results = [run_stage(name, Path(out), fast, from_scratch) for name in names]
    else:
        results = _run_side_by_side(names, Path(out), fast, from_scratch, workers, threads)
    header = (f"Ran {', '.join(r.task for r in results)} in {time.time() - started:.0f} s on {platform.machine()} "
              f"({workers} stage{'s' if workers > 1 else ''} at a time, {threads} thread{'s' if threads > 1 else ''} each, "
              f"torch {torch.__version__}){' [--fast: wiring check, numbers not meaningful]' if fast else ''}"
              f"{' [--from-scratch: the tiny base trained in this run]' if from_scratch else ''}.")
    return write_report(results, Path(out), header)


def run_stage(name: str, out: Path, fast: bool, from_scratch: bool) -> StageResult:
    """Run one stage with a context of its own; its result carries the stage's timings."""
    ctx = DemoContext(out=out, fast=fast, from_scratch=from_scratch)
    logger.info("demo: stage %s", name)
    stage_start = time.time()
    result = _stages()[name](ctx)
    result.timings = {**ctx.timings, "stage total": time.time() - stage_start}
    logger.info("demo: stage %s done in %.0f s", name, result.timings["stage total"])
    return result


# The order stages start in when several run side by side: the longest first, and pose before mcld (which trains
# first and needs pose's CFLD outputs only to score: in the measured run they were ready 20 s before), style before
# illustrate (which waits, under the cache's lock, for the style LoRA).
START_ORDER = ("pose", "design", "tryon", "style", "mcld", "illustrate", "retrieval", "base")


def _run_side_by_side(names: list[str], out: Path, fast: bool, from_scratch: bool, workers: int,
                      threads: int) -> list[StageResult]:
    """Run the stages in `workers` processes of `threads` threads; return their results in `names`' order. Cached
    products (data, models) are built once: the first stage to need one builds it under its lock (context.cached)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from atelier.utils.progress import progress

    order = sorted(names, key=lambda name: START_ORDER.index(name) if name in START_ORDER else len(START_ORDER))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no forked thread pools
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_setup,
                             initargs=(threads, logging.getLogger().level)) as pool:
        futures = {pool.submit(run_stage, name, out, fast, from_scratch): name for name in order}
        results = {}
        for future in progress(as_completed(futures), total=len(futures), desc=f"demo stages ({workers} at a time)"):
            results[futures[future]] = future.result()
    return [results[name] for name in names]


def _worker_setup(threads: int, level: int) -> None:
    """A stage worker: its share of the cores, the parent's log level, no progress bars (they would interleave)."""
    import torch

    torch.set_num_threads(threads)
    os.environ["ATELIER_NO_PROGRESS"] = "1"
    logging.basicConfig(level=level, format="%(asctime)s %(processName)s: %(message)s", datefmt="%H:%M:%S")
