"""The task registry: every training task, generic (atelier.training.tasks) or a method's (atelier.methods.*.train),
by the `task:` value of its YAML config. It sits above the methods so that nothing below imports upwards.

`TASKS` maps the `task:` value of a YAML config to (config class, task class); an unknown task fails at load time
naming the valid ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atelier.config import apply_overrides, from_dict, read_yaml
from atelier.errors import UserError
from atelier.methods.cfld.train import PoseConfig, PoseTask
from atelier.methods.mcld.train import MCLDConfig, MCLDTask
from atelier.methods.style.train import StyleLoraConfig, StyleLoraTask
from atelier.methods.style.train_adapter import ImageAdapterConfig, ImageAdapterTask
from atelier.methods.tryon.train import TryOnConfig, TryOnTask
from atelier.methods.unidllora.train import DualLoraConfig, DualLoraTask
from atelier.methods.unifashion.train import RetrievalConfig, RetrievalTask
from atelier.training.recipe import BaseRecipeConfig, run_recipe
from atelier.training.tasks.autoencoder import AutoencoderConfig, AutoencoderTask
from atelier.training.tasks.text2img import Text2ImgConfig, Text2ImgTask

TASKS: dict[str, tuple[type, type]] = {
    "text2img": (Text2ImgConfig, Text2ImgTask),
    "autoencoder": (AutoencoderConfig, AutoencoderTask),
    "style-lora": (StyleLoraConfig, StyleLoraTask),
    "image-adapter": (ImageAdapterConfig, ImageAdapterTask),
    "pose": (PoseConfig, PoseTask),
    "mcld": (MCLDConfig, MCLDTask),
    "dual-lora": (DualLoraConfig, DualLoraTask),
    "retrieval": (RetrievalConfig, RetrievalTask),
    "tryon": (TryOnConfig, TryOnTask),
    "garment-design": (TryOnConfig, TryOnTask),
}

# Multi-stage recipes: `atelier train` runs the function (config, run folder) instead of one task's loop.
RECIPES: dict[str, tuple[type, Any]] = {
    "fashionsynth-base": (BaseRecipeConfig, run_recipe),
}


def config_from_dict(data: dict[str, Any], source: str = "config") -> Any:
    """The typed config of the task named by data['task']."""
    task = data.get("task")
    known = {name: classes[0] for name, classes in (TASKS | RECIPES).items()}
    if task is None:
        raise UserError(f"{source}: no 'task' key; add one, e.g. 'task: text2img' (tasks: {', '.join(known)})")
    if not isinstance(task, str) or task not in known:
        raise UserError(f"{source}: 'task' is {task!r}; expected one of {', '.join(known)}")
    return from_dict(known[task], data, where="config")


def load_config(path: str | Path, overrides: list[str] = ()) -> Any:
    """Read a task config from YAML and apply dotted overrides (train.lr=1e-4)."""
    data = apply_overrides(read_yaml(path), list(overrides))
    return config_from_dict(data, source=str(path))


def build_task(config: Any, **kwargs: Any) -> Any:
    """Instantiate the task class for a typed config."""
    return TASKS[config.task][1](config, **kwargs)
