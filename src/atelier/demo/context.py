"""What the demo's tasks share: the run folder, the FashionSynth data and the tiny base model, both cached.

A cached product is a folder with a stamp (the settings that made it); a later run with the same stamp reuses it, so
a second `make demo` skips the data and the base model's training.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from atelier import __version__
from atelier.utils.io import write_json

logger = logging.getLogger(__name__)

STAMP = ".atelier-stamp.json"

# FashionSynth settings of the demo (identities x poses; 176x256 like DeepFashion at CFLD's test size).
DEMO_DATA = {"identities": 48, "poses_per_identity": 4, "size": (176, 256), "seed": 0, "test_fraction": 0.2}


@dataclass
class DemoContext:
    out: Path
    fast: bool = False  # fewer steps: for tests of the demo's wiring, not for the numbers
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.out / "data"

    def timed(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.time()
        result = fn()
        self.timings[name] = time.time() - start
        logger.info("demo: %s took %.1f s", name, self.timings[name])
        return result

    def steps(self, full: int, fast: int) -> int:
        return fast if self.fast else full


def cached(folder: Path, key: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """Return `folder` if its stamp equals `key`; otherwise rebuild it with build(folder) and stamp it."""
    key = json.loads(json.dumps({"atelier": __version__, **key}, default=str))
    stamp = folder / STAMP
    if stamp.exists() and json.loads(stamp.read_text()) == key:
        logger.info("demo: reusing %s", folder)
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    build(folder)
    write_json(stamp, key)
    return folder


def ensure_data(ctx: DemoContext) -> Path:
    """FashionSynth for the demo (cached)."""
    from atelier.data.synth import synthesize

    settings = dict(DEMO_DATA, identities=16 if ctx.fast else DEMO_DATA["identities"])
    return ctx.timed("synthesize data", lambda: cached(ctx.data, settings, lambda d: synthesize(d, overwrite=True, **settings)))
