"""A training run's folder: which folders `--resume` may continue and `--overwrite` may delete, checked before any
work, and the marker that makes a folder a run.

A run folder carries the output marker (atelier.utils.outputs.MARKER) with command "train" and its task; folders of
runs made before markers existed are recognised by the `task:` of their config.yaml.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from atelier.config import to_dict
from atelier.errors import UserError
from atelier.utils.outputs import check_folder_path, check_outside, check_overwritable, read_marker, write_marker


def run_task(folder: str | os.PathLike) -> str | None:
    """The task of the training run in `folder`, or None when it is not one (no train marker, no run config.yaml)."""
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is not None:
        return marker.get("task") if marker.get("command") == "train" else None
    try:
        data = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    task = data.get("task") if isinstance(data, dict) else None
    return task if isinstance(task, str) else None


def config_inputs(config: Any) -> list[tuple[str, str]]:
    """Every string of the config as (dotted key, value): the paths among them are what the run reads."""
    found: list[tuple[str, str]] = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for name, child in value.items():
                walk(child, f"{key}.{name}" if key else str(name))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                walk(child, f"{key}[{index}]")
        elif isinstance(value, str) and value:
            found.append((key, value))

    walk(to_dict(config), "")
    return found


def check_same_task(run_dir: Path, task: str) -> None:
    """Refuse to continue a run folder of another task (its checkpoints would not fit), naming both."""
    found = run_task(run_dir)
    if found is not None and found != task:
        raise UserError(f"--out {run_dir} is a run of task '{found}', but this config trains '{task}'; choose another "
                        f"--out, or resume with the config of that run ({run_dir / 'config.yaml'})")


def prepare_run_dir(run_dir: str | os.PathLike, config: Any, *, resume: bool, overwrite: bool) -> Path:
    """Check `run_dir` before any work: a writable folder outside the config's inputs; when not empty, a run of the
    same task (`resume`), or an atelier training run to delete (`overwrite`). Deletes it for `overwrite`."""
    run_dir = Path(run_dir)
    check_folder_path(run_dir, "--out")
    check_outside(run_dir, config_inputs(config))
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return run_dir
    if resume:
        if run_task(run_dir) is None:
            raise UserError(f"--out {run_dir}: --resume refused, this non-empty folder is not an atelier training run "
                            "(no marker, no config.yaml); choose the run folder to continue, or a new folder")
        check_same_task(run_dir, config.task)
    elif overwrite:
        if run_task(run_dir) is None:
            check_overwritable(run_dir, "train")
        shutil.rmtree(run_dir)
    elif run_task(run_dir) is None:  # neither flag would be accepted: do not suggest them
        raise UserError(f"--out {run_dir} is not empty and not an atelier training run; choose a new or empty folder")
    else:
        raise UserError(f"run folder {run_dir} is not empty; pass --resume to continue it or --overwrite to start over")
    return run_dir


def claim_run_dir(run_dir: Path, task: str | None, write: bool = True) -> None:
    """Called as a run starts: refuse another task's folder, then mark it as this task's run (if not yet)."""
    if task is not None:
        check_same_task(run_dir, task)
    if write and read_marker(run_dir) is None:
        write_marker(run_dir, "train", task=task)
