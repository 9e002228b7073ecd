"""Running a task for the app: a fresh request folder per run, and the CLI command itself run in this process.

A tab builds the argument list `atelier COMMAND ...` would take (every value as `--flag=value`, so text that starts
with a dash stays a value) and `run_command` parses it with the CLI's own parser and runs it, one at a time: the
outputs, grid.png and settings.json are exactly the CLI's. Errors come back as UserError with the CLI's one line.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atelier.errors import UserError

logger = logging.getLogger(__name__)

_one_at_a_time = threading.Lock()
_counter = itertools.count(1)


@dataclass(frozen=True)
class Workspace:
    """Where the app writes: WORKDIR/<task>/<time>-<n>/ per request, each with inputs/ and out/."""

    root: Path

    def new_request(self, task: str) -> Path:
        folder = self.root / task / f"{time.strftime('%Y%m%d-%H%M%S')}-{next(_counter):04d}"
        (folder / "inputs").mkdir(parents=True, exist_ok=False)
        return folder


@dataclass(frozen=True)
class AppContext:
    """What every tab needs: where to write, the upload limits, and the runs found under the --checkpoints folders."""

    workspace: Workspace
    limits: Any  # uploads.Limits
    roots: list[Path]
    checkpoints: list[Any]  # checkpoints.Checkpoint

    def of_task(self, task: str) -> list[Any]:
        return [checkpoint for checkpoint in self.checkpoints if checkpoint.task == task]


@dataclass
class Result:
    """What a run produced: the main image, every file to offer for download, and the settings it ran with."""

    image: Path | None
    files: list[Path] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def run_command(argv: list[str]) -> None:
    """Parse `argv` (the words after `atelier`) with the CLI's parser and run the command, one command at a time in
    this process; UserError with the CLI's one-line message for whatever the CLI reports as an error (bad input, a
    full disk, ...)."""
    from atelier.cli import DEBUG_HINT, build_parser, describe

    with _one_at_a_time:  # also keeps the stderr redirection below to one thread
        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured):
                args = build_parser().parse_args(argv)
        except SystemExit:
            lines = [line for line in captured.getvalue().splitlines() if line.strip()]
            raise UserError(lines[-1] if lines else f"could not parse {' '.join(argv)}") from None
        logger.info("app: atelier %s", " ".join(argv))
        try:
            args.func(args)
        except Exception as error:
            described = describe(error)
            if described is None:
                raise
            raise UserError(described[0].replace(f" {DEBUG_HINT}", "")) from error  # the page has no --debug


def collect(out: Path, main: Path | None, extra: tuple[str, ...] = ("grid.png", "preview/grid.png")) -> Result:
    """The Result of a command that wrote into `out`: `main` (when it exists), the grids and settings.json."""
    settings_path = out / "settings.json"
    settings = json.loads(settings_path.read_text(encoding="utf-8")) if settings_path.is_file() else {}
    files = [path for path in [main, *(out / name for name in extra), settings_path] if path is not None and path.is_file()]
    return Result(main if main is not None and main.is_file() else None, files, settings)


def flag(name: str, value: Any) -> list[str]:
    """`--name=value` for a value that was given, nothing for None or ''."""
    if value is None or value == "":
        return []
    if name in INTEGER_FLAGS and isinstance(value, float) and value.is_integer():
        value = int(value)  # sliders and number fields send 20.0 for 20
    return [f"--{name}={value}"]


INTEGER_FLAGS = {"steps", "seed", "batch-size", "limit"}


def switch(name: str, on: bool) -> list[str]:
    """`--name` when `on`."""
    return [f"--{name}"] if on else []
