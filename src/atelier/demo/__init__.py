"""`atelier demo`: the main job on the embedded default (FashionSynth + tiny models), one stage per task."""

from __future__ import annotations

import logging
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


# Stages a plain `atelier demo` runs. tryon and design run only when named (--task tryon): at the step counts that fit
# the 10-minute budget they do not yet learn the garment (docs/tryon.md, "Embedded default").
OPT_IN = ("tryon", "design")


def task_names() -> list[str]:
    """The demo's stages, in the order a full run takes them (the opt-in ones last)."""
    return list(_stages())


def run_demo(out: str | Path = "runs/demo", tasks: list[str] | None = None, fast: bool = False,
             from_scratch: bool = False) -> Path:
    """Run the chosen demo stages (all by default) and write OUT/report.html; return its path. from_scratch: train the
    tiny base here (at 64x48) instead of starting from the embedded FashionSynth base (at 96x64)."""
    import torch

    stages = _stages()
    ctx = DemoContext(out=Path(out), fast=fast, from_scratch=from_scratch)
    ctx.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results = []
    for name in tasks or [name for name in stages if name not in OPT_IN]:
        logger.info("demo: stage %s", name)
        before = dict(ctx.timings)
        stage_start = time.time()
        result = stages[name](ctx)
        result.timings = {k: v for k, v in ctx.timings.items() if before.get(k) != v}
        result.timings["stage total"] = time.time() - stage_start
        results.append(result)
    header = (f"Ran {', '.join(r.task for r in results)} in {time.time() - started:.0f} s on {platform.machine()} "
              f"({torch.get_num_threads()} threads, torch {torch.__version__}){' [--fast: wiring check, numbers not meaningful]' if fast else ''}"
              f"{' [--from-scratch: the tiny base trained in this run]' if from_scratch else ''}.")
    return write_report(results, ctx.out, header)
