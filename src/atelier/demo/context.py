"""What the demo's tasks share: the run folder, the FashionSynth data and the tiny base model, both cached.

A cached product is a folder with a stamp (the settings that made it); a later run with the same stamp reuses it, so
a second `make demo` skips the data and the base model's training. A product built on another (the style LoRA on the
base) puts that one's stamp in its own, so retraining the base retrains what depends on it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from atelier import __version__
from atelier.utils.io import write_json

logger = logging.getLogger(__name__)

STAMP = ".atelier-stamp.json"
# (H, W) of every demo model: the embedded base's 96x64 (latents 24x16), or with --from-scratch the tiny base's 64x48
# (FashionSynth's 176x256 photos at 1/4 scale, latents 16x12), which the demo trains itself in minutes.
EMBEDDED_RESOLUTION, SCRATCH_RESOLUTION = (96, 64), (64, 48)

# FashionSynth settings of the demo (identities x poses; 176x256 like DeepFashion at CFLD's test size).
DEMO_DATA = {"identities": 48, "poses_per_identity": 4, "size": (176, 256), "seed": 0, "test_fraction": 0.2}
# --fast: 2 held-out identities in 2 poses at half size, just enough for every stage's tables
FAST_DATA = {"identities": 10, "poses_per_identity": 2, "size": (88, 128)}

T = TypeVar("T")


@dataclass
class DemoContext:
    out: Path
    fast: bool = False  # fewer steps and images: for tests of the demo's wiring, not for the numbers
    from_scratch: bool = False  # train the tiny base in the demo instead of starting from the embedded one
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        """The demo's FashionSynth folder (OUT/data)."""
        return self.out / "data"

    @property
    def resolution(self) -> tuple[int, int]:
        """(H, W) of every model and score of this run."""
        return SCRATCH_RESOLUTION if self.from_scratch else EMBEDDED_RESOLUTION

    def timed(self, name: str, fn: Callable[[], T]) -> T:
        """Run fn() and record how long it took under `name` (the report's timings table)."""
        start = time.time()
        result = fn()
        self.timings[name] = time.time() - start
        logger.info("demo: %s took %.1f s", name, self.timings[name])
        return result

    def pick(self, full: T, fast: T) -> T:
        """`full` for the demo, `fast` under --fast (steps, batch sizes, image counts)."""
        return fast if self.fast else full

    def stamps(self, *names: str) -> dict[str, Any]:
        """The stamps of the cached products OUT/<name> (a key part for what is built on them); the embedded base's
        is its manifest (every file's sha256)."""
        from atelier.diffusion.components import embedded_base_dir
        from atelier.diffusion.release import MANIFEST

        def stamp(name: str) -> Any:
            if name == "base" and not self.from_scratch:
                return json.loads((embedded_base_dir() / MANIFEST).read_text())
            return json.loads((self.out / name / STAMP).read_text())

        return {name: stamp(name) for name in names}

    def train(self, name: str, make_task: Callable[[], Any], cfg: Any, folder: Path) -> None:
        """Build a training task, then train it into `folder` with cfg.train, timed as `name`."""
        from atelier.training.loop import train

        task = make_task()
        self.timed(name, lambda: train(task, cfg.train, folder, config=cfg))


def cached(folder: Path, key: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """Return `folder` if its stamp equals `key`; otherwise rebuild it with build(folder) and stamp it. Stages running
    side by side (run_demo's workers) take the folder's lock first: one builds, the others wait and reuse."""
    key = json.loads(json.dumps({"atelier": __version__, **key}, default=str))
    stamp = folder / STAMP
    with folder_lock(folder):
        if stamp.exists() and json.loads(stamp.read_text()) == key:
            logger.info("demo: reusing %s", folder)
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        build(folder)
        write_json(stamp, key)
    return folder


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (a file beside it, .NAME.lock) for the block; waits while another process
    holds it."""
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def synthesized(ctx: DemoContext, name: str, settings: dict[str, Any], fast: dict[str, Any]) -> Path:
    """A FashionSynth draw with `settings` (updated by `fast` under --fast), cached under OUT/<name>."""
    from atelier.data.synth import synthesize

    chosen = ctx.pick(settings, {**settings, **fast})
    return ctx.timed(f"synthesize {name}", lambda: cached(ctx.out / name, chosen,
                                                         lambda folder: synthesize(folder, overwrite=True, **chosen)))


def ensure_data(ctx: DemoContext) -> Path:
    """FashionSynth for the demo, with MCLD's conditions (cached under OUT/data)."""
    return synthesized(ctx, "data", {**DEMO_DATA, "conditions": True}, FAST_DATA)
