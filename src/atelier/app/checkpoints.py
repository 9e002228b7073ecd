"""Finding the training runs a tab can use: every `final/` folder (or run folder) whose config.yaml names a task."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atelier.errors import UserError

# task of a run's config.yaml -> (what the tab calls it, the demo stage that trains one, its minutes on 2 CPU cores)
TASKS = {
    "style-lora": ("style LoRA", "style", 2),
    "dual-lora": ("Uni-DlLoRA checkpoint", "illustrate", 2),
    "pose": ("CFLD pose model", "pose", 4),
    "retrieval": ("UniFashion retrieval run", "retrieval", 2),
    "index": ("catalogue index", "retrieval", 2),  # not a training task: an `atelier index` folder (items.json)
    "tryon": ("try-on model", "tryon", 5),
    "garment-design": ("garment design model", "design", 5),
}
INDEX_FILE = "items.json"
SKIP = {"checkpoints", "samples", "data", "vae-data", ".git", "node_modules"}  # never hold a run's final/
MAX_DEPTH = 5


@dataclass(frozen=True)
class Checkpoint:
    """A run's final/ folder, what it was trained for and the config it was trained with."""

    task: str
    path: Path
    label: str
    config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def read_run_config(folder: Path) -> dict[str, Any] | None:
    """The config.yaml of a run's final/ folder as a dict, None when there is none or it is not a run config."""
    from atelier.config import read_yaml

    path = folder / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = read_yaml(path)
    except UserError:
        return None
    return data if isinstance(data, dict) and data.get("task") in TASKS else None


def find_checkpoints(roots: list[Path]) -> list[Checkpoint]:
    """Every run under `roots` (MAX_DEPTH folders deep), sorted by label: a folder `final/` whose config.yaml names a
    task in TASKS. Labelled by the run folder's path relative to its root."""
    found = []
    for root in roots:
        root = Path(root).expanduser()
        for folder, subfolders, _ in os.walk(root):
            depth = len(Path(folder).relative_to(root).parts)
            subfolders[:] = sorted(name for name in subfolders if name not in SKIP and depth < MAX_DEPTH)
            if (Path(folder) / INDEX_FILE).is_file() and _is_index(Path(folder)):
                found.append(Checkpoint("index", Path(folder), f"{root.name}/{Path(folder).relative_to(root)}"))
                subfolders[:] = []
                continue
            if Path(folder).name != "final":
                continue
            config = read_run_config(Path(folder))
            if config is not None:
                run = Path(folder).parent
                label = str(run.relative_to(root)) if run != root else run.name
                found.append(Checkpoint(config["task"], Path(folder), f"{root.name}/{label}", config))
            subfolders[:] = []
    return sorted(found, key=lambda checkpoint: checkpoint.label)


def _is_index(folder: Path) -> bool:
    """Whether `folder` is an `atelier index` output (its items.json says so)."""
    import json

    try:
        return json.loads((folder / INDEX_FILE).read_text(encoding="utf-8")).get("format") == "atelier-retrieval-index"
    except (OSError, ValueError, AttributeError):
        return False


def missing_message(task: str, roots: list[Path]) -> str:
    """What to do when no run of `task` was found under `roots`: the command that trains the demo's, and the path
    field."""
    name, stage, minutes = TASKS[task]
    where = ", ".join(str(root) for root in roots) or "no --checkpoints folder"
    return (f"No {name} found under {where}. Train the demo's with `atelier demo --task {stage}` (about {minutes} "
            f"minutes on 2 CPU cores; it writes runs/demo), then restart the app, or type the path of a {task} run's "
            "final/ folder in the checkpoint field.")


def resolve(text: str | None, task: str, known: list[Checkpoint], roots: list[Path]) -> Checkpoint:
    """The checkpoint a tab's field names: a known run's label, or a path to a run (its final/) or a released
    checkpoint folder. UserError naming the field when empty, missing, or of another task."""
    text = (text or "").strip()
    if not text:
        raise UserError(f"checkpoint: none chosen. {missing_message(task, roots)}")
    labelled = next((checkpoint for checkpoint in known if checkpoint.label == text), None)
    if labelled is not None and labelled.task == task:
        return labelled
    path = labelled.path if labelled is not None else Path(text).expanduser()
    if not path.is_dir():
        raise UserError(f"checkpoint {text}: no such folder; choose one from the list or type the path of a run's "
                        "final/ folder")
    final = path / "final" if (path / "final").is_dir() else path
    config = read_run_config(final)
    if config is not None and config["task"] != task:
        raise UserError(f"checkpoint {text} is a {config['task']} run; this tab needs a {task} run ({TASKS[task][0]})")
    return Checkpoint(task, final, text, config or {})
