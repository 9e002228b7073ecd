"""The shared task base (atelier.training.base, atelier.training.cache): list-file filter, strict loading, the step
reaching `training_loss`, image caching order; on a toy task, CPU."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from atelier.config import TrainConfig
from atelier.errors import UserError
from atelier.training.base import TaskBase, filter_listed, load_strict
from atelier.training.cache import load_images
from atelier.training.loop import train
from tests.helpers import write_random_photos


class ToyTask(TaskBase):
    """A linear model on fixed data that records the step of every `training_loss` call."""

    def __init__(self, width: int = 3) -> None:  # no SD components: only the loop's interface is under test
        self.cfg = SimpleNamespace(task="toy")
        self.device = torch.device("cpu")
        torch.manual_seed(0)
        self.model = torch.nn.Linear(width, 1)
        self.inputs = torch.randn(6, width, generator=torch.Generator().manual_seed(1))
        self.steps: list[int] = []

    def num_examples(self) -> int:
        return len(self.inputs)

    def step_modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator, step: int) -> torch.Tensor:
        self.steps.append(step)
        return self.model(self.inputs[batch]).square().mean()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.model.named_parameters())

    def save_outputs(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)

    def sample(self, folder: Path, step: int) -> None:
        pass


def toy_config(**train: object) -> TrainConfig:
    return TrainConfig(**{"max_steps": 3, "batch_size": 2, "gradient_accumulation": 2, "checkpoint_every": 1,
                          "log_every": 1, **train})


def test_the_loop_passes_each_micro_batch_its_optimizer_step(tmp_path: Path) -> None:
    task = ToyTask()
    train(task, toy_config(), tmp_path / "straight")
    assert task.steps == [0, 0, 1, 1, 2, 2]
    train(ToyTask(), toy_config(), tmp_path / "killed", stop_after=1)
    resumed = ToyTask()
    train(resumed, toy_config(), tmp_path / "killed", resume=True)
    assert resumed.steps == [1, 1, 2, 2]  # a resumed run continues from the checkpoint's step, not from 0
    assert all(torch.equal(a, b) for a, b in zip(task.trainable_parameters(), resumed.trainable_parameters()))


def test_resuming_with_another_shape_names_the_tensor_and_the_checkpoint(tmp_path: Path) -> None:
    train(ToyTask(width=3), toy_config(), tmp_path, stop_after=1)
    with pytest.raises(UserError, match=r"step-0000001.*weight has shape \(1, 3\), this task trains \(1, 4\)"):
        train(ToyTask(width=4), toy_config(), tmp_path, resume=True)


def test_strict_loading_names_missing_unexpected_and_misshapen_keys() -> None:
    task = ToyTask()
    state = {name: torch.full_like(value, 0.5) for name, value in task.trainable_state_dict().items()}
    with pytest.raises(UserError, match="toy checkpoint: bias is missing"):
        task.load_trainable_state_dict({"weight": state["weight"]})
    with pytest.raises(UserError, match="schedule.micro_steps .*is not a tensor this task trains"):
        task.load_trainable_state_dict({**state, "schedule.micro_steps": torch.tensor(4.0)})
    with pytest.raises(UserError, match=r"bias has shape \(2,\)"):
        task.load_trainable_state_dict({**state, "bias": torch.zeros(2)})
    assert not torch.equal(task.model.weight, state["weight"])  # a failed load copies nothing
    task.load_trainable_state_dict(state)
    assert torch.equal(task.model.weight.detach(), state["weight"]) and torch.equal(task.model.bias.detach(), state["bias"])


def test_retired_keys_are_skipped() -> None:
    params = {"weight": torch.nn.Parameter(torch.zeros(2))}
    load_strict(params, {"weight": torch.ones(2), "old.counter": torch.tensor(3.0)}, "checkpoint", retired={"old.counter"})
    assert torch.equal(params["weight"].detach(), torch.ones(2))


def test_list_file_keeps_the_named_files(tmp_path: Path) -> None:
    files = [Path("data/a.jpg"), Path("data/sub/b.png"), Path("data/c.jpg"), Path("data/d.v2.jpg")]
    assert filter_listed(files, None) == files
    listing = tmp_path / "train.lst"
    listing.write_text("a.jpg\n\n  sub/b  \nd.v2.png\n")  # suffixes and folders do not matter
    assert filter_listed(files, listing) == [files[0], files[1], files[3]]
    items = [SimpleNamespace(path=str(file)) for file in files]
    assert [item.path for item in filter_listed(items, str(listing), lambda item: item.path)] == ["data/a.jpg", "data/sub/b.png", "data/d.v2.jpg"]
    listing.write_text("a.jpg\nmissing.jpg\n")  # a listed image that is not there is named, never dropped
    with pytest.raises(UserError, match=r"data.list_file .*train.lst: 1 listed images are missing .*missing"):
        filter_listed(files, listing)
    with pytest.raises(UserError, match=r"gone.lst"):
        filter_listed(files, tmp_path / "gone.lst")


def test_flipped_images_follow_the_originals(tmp_path: Path) -> None:
    files = write_random_photos(tmp_path, 2, (12, 10))
    plain = load_images(files, (8, 8))
    flipped = load_images(files, (8, 8), flip=True)
    assert plain.shape == (2, 3, 8, 8) and flipped.shape == (4, 3, 8, 8)
    assert torch.equal(flipped[:2], plain) and torch.equal(flipped[2:], plain.flip(-1))
