"""The shared base of every training task: set-up, the loop's default interface, strict loading, the list-file filter.

A class where the code needs the task itself, functions where it does not. `TaskBase` is inherited because its pieces
call each other through the task: set-up fills `cfg`, `device` and `components`; the loop-interface defaults read
them and the task's own `trainable_state_dict` (one strict `load_trainable_state_dict`, `trainable_parameters`,
`collate`, `step_modules`); the abstract methods name what each task still has to write. `load_strict`,
`filter_listed` and `task_device` are plain functions, since they work on tensors, files and strings: data readers
such as text2img's `read_training_items` call them with no task built, and tests check them alone. The caching of
encodings (latents, captions) lives beside this, in atelier.training.cache.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch

from atelier.diffusion.components import SDComponents, freeze, load_components
from atelier.errors import UserError

T = TypeVar("T")
PARTS = ("unet", "vae", "text_encoder")  # the SDComponents parts that are modules


def task_device(device: str | torch.device | None = None) -> torch.device:
    """The device a task works on: the one asked for, else this process's GPU (one per rank under accelerate launch), else the CPU."""
    if device is not None:
        return torch.device(device)
    if not torch.cuda.is_available():
        return torch.device("cpu")  # what the loop's Accelerator uses without CUDA (never MPS)
    from accelerate import PartialState

    return PartialState().device


def load_strict(params: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str,
                retired: Collection[str] = ()) -> None:
    """Copy `state` into `params` in place; a missing key, an unexpected key or another shape is a UserError naming it.

    Nothing is copied unless everything fits. `retired`: keys older versions wrote that are skipped.
    """
    state = {name: value for name, value in state.items() if name not in retired}
    fix = "resume with the config the run was made with (its config.yaml), or start a new run without --resume"
    missing = sorted(set(params) - set(state))
    if missing:
        raise UserError(f"{source}: {missing[0]} is missing (and {len(missing) - 1} more trained tensors); {fix}")
    unexpected = sorted(set(state) - set(params))
    if unexpected:
        raise UserError(f"{source}: {unexpected[0]} (and {len(unexpected) - 1} more) is not a tensor this task trains; {fix}")
    for name, param in params.items():
        if state[name].shape != param.shape:
            raise UserError(f"{source}: {name} has shape {tuple(state[name].shape)}, this task trains "
                            f"{tuple(param.shape)}; {fix}")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name])


def filter_listed(items: Iterable[T], list_file: str | os.PathLike | None,
                  path: Callable[[T], str | os.PathLike] = lambda item: item, flag: str = "data.list_file") -> list[T]:
    """The items whose file (`path(item)`) the list file names, by name without suffix, one a line; all without one.
    A listed image that is not among the items is an error naming the list (data.formats.lists), never dropped."""
    from atelier.data.formats.lists import select_listed

    return select_listed(items, list_file, path, flag)


class TaskBase(ABC):
    """A training task on Stable Diffusion components: set-up, and the loop's interface where tasks agree."""

    retired_keys: frozenset[str] = frozenset()  # state keys older versions checkpointed; loading skips them

    def __init__(self, cfg: Any, components: SDComponents | None = None, device: str | torch.device | None = None, *,
                 frozen: Iterable[str] = ("vae", "text_encoder"), on_device: Iterable[str] = PARTS):
        """Keep the config, pick the device, load the components (unless given), move `on_device` and freeze `frozen`."""
        self.cfg = cfg
        self.device = task_device(device)
        self.components = components if components is not None else load_components(cfg.model.base, cfg.model.revision)
        for part in on_device:
            getattr(self.components, part).to(self.device)
        freeze(*(getattr(self.components, part) for part in frozen))

    # --- what each task writes --------------------------------------------------------------------------------------
    @abstractmethod
    def num_examples(self) -> int:
        """How many examples one epoch visits."""

    @abstractmethod
    def training_loss(self, batch: Any, generator: torch.Generator, step: int) -> torch.Tensor:
        """The loss of one micro-batch at optimizer step `step` (0-based); every random draw from `generator`."""

    @abstractmethod
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every trained tensor by a stable name: what checkpoints and EMA hold."""

    @abstractmethod
    def save_outputs(self, folder: Path) -> None:
        """Write the trained model to RUN/final."""

    @abstractmethod
    def sample(self, folder: Path, step: int) -> None:
        """Write a grid of samples for step `step` into `folder`."""

    # --- defaults of the loop's interface -----------------------------------------------------------------------
    def collate(self, indices: list[int]) -> Any:
        """The batch `training_loss` gets: by default the example indices, on the task's device (rows of its caches)."""
        return torch.tensor(indices, device=self.device)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer updates: the tensors of the trainable state dict, in its order."""
        return list(self.trainable_state_dict().values())

    def step_modules(self) -> list[torch.nn.Module]:
        """The model(s) that run forward and backward every step: by default the UNet."""
        return [self.components.unet]

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a checkpoint's (or EMA's) tensors in; every key and shape must match (see `load_strict`)."""
        load_strict(self.trainable_state_dict(), state, f"{self.cfg.task} checkpoint", self.retired_keys)
