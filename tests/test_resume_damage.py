"""Resume after damage, through `atelier train --resume`: a truncated newest checkpoint or one missing its optimizer
state falls back to the previous one (and still ends bit-identical to a run that never stopped), a half-written log
line is dropped, another task's run folder is refused, and --overwrite deletes only a run folder."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from atelier.registry import build_task, load_config
from atelier.training.loop import train
from atelier.utils.outputs import MARKER, read_marker
from tests.helpers import cli_outcome

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = """task: text2img
model:
  base: {base}
data:
  root: {root}
  resolution: [32, 32]
  max_images: 6
sample:
  steps: 2
train:
  max_steps: 3
  batch_size: 2
  lr: 1.0e-3
  checkpoint_every: 1
  keep_checkpoints: 3
  log_every: 1
"""


@pytest.fixture(scope="module")
def config_path(synth_root, tiny_model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(CONFIG.format(base=tiny_model_dir, root=synth_root / "style" / "photo"))
    return path


@pytest.fixture(scope="module")
def reference(config_path, tmp_path_factory):
    """The weights of a run that was never interrupted."""
    run = tmp_path_factory.mktemp("reference") / "run"
    code, output = cli_outcome(["train", str(config_path), "--out", str(run)])
    assert code == 0, output
    return _final_weights(run)


def _final_weights(run):
    return load_file(str(run / "final" / "unet" / "diffusion_pytorch_model.safetensors"))


def _killed_run(config_path, run, steps=2):
    """A run stopped after `steps` steps, as a kill would leave it (checkpoints step-1 .. step-`steps`)."""
    config = load_config(config_path)
    train(build_task(config), config.train, run, config=config, stop_after=steps)
    assert not (run / "final").exists()
    return run / "checkpoints"


def _assert_same(reference, run):
    resumed = _final_weights(run)
    assert resumed.keys() == reference.keys() and all(torch.equal(resumed[k], reference[k]) for k in reference)


@pytest.mark.parametrize("damage", ["truncated-weights", "missing-optimizer", "truncated-optimizer", "empty-state"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(damage, config_path, reference, tmp_path, caplog):
    checkpoints = _killed_run(config_path, tmp_path / "run")
    newest = checkpoints / "step-0000002"
    if damage == "truncated-weights":
        weights = newest / "trainable.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "missing-optimizer":
        (newest / "optimizer.pt").unlink()
    elif damage == "truncated-optimizer":
        optimizer = newest / "optimizer.pt"
        optimizer.write_bytes(optimizer.read_bytes()[:100])
    else:
        (newest / "state.json").write_text("")
    with caplog.at_level(logging.WARNING, logger="atelier.training.loop"):
        code, output = cli_outcome(["train", str(config_path), "--out", str(tmp_path / "run"), "--resume"])
    assert code == 0, output
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("step-0000002 is damaged" in w and "falling back" in w for w in warnings), warnings
    _assert_same(reference, tmp_path / "run")  # resumed from step 1, still exact
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-0000001", "step-0000002", "step-0000003"]


def test_every_checkpoint_damaged_is_one_line(config_path, tmp_path):
    checkpoints = _killed_run(config_path, tmp_path / "run", steps=1)
    (checkpoints / "step-0000001" / "optimizer.pt").unlink()
    code, output = cli_outcome(["train", str(config_path), "--out", str(tmp_path / "run"), "--resume"])
    assert code == 2 and "Traceback" not in output, output
    assert "every checkpoint" in output and "step-0000001" in output and "--overwrite" in output


def test_a_half_written_log_line_is_dropped(config_path, reference, tmp_path, caplog):
    _killed_run(config_path, tmp_path / "run")
    log = tmp_path / "run" / "log.jsonl"
    with log.open("a") as handle:
        handle.write('{"step": 3, "loss": 0.1')  # killed while writing step 3's row
    with caplog.at_level(logging.WARNING, logger="atelier.training.loop"):
        code, output = cli_outcome(["train", str(config_path), "--out", str(tmp_path / "run"), "--resume"])
    assert code == 0, output
    assert any("dropped line 3" in r.getMessage() and "log.jsonl" in r.getMessage() for r in caplog.records)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3] and all("lr" in row for row in rows)
    _assert_same(reference, tmp_path / "run")


def test_runs_are_marked_and_another_tasks_config_cannot_resume_them(config_path, tmp_path):
    _killed_run(config_path, tmp_path / "run", steps=1)
    assert read_marker(tmp_path / "run") == {**read_marker(tmp_path / "run"), "command": "train", "task": "text2img"}
    autoencoder = tmp_path / "autoencoder.yaml"
    autoencoder.write_text("task: autoencoder\nmodel:\n  base: tiny\n")
    code, output = cli_outcome(["train", str(autoencoder), "--out", str(tmp_path / "run"), "--resume"])
    assert code == 2 and "'text2img'" in output and "'autoencoder'" in output and "Traceback" not in output
    assert (tmp_path / "run" / "checkpoints" / "step-0000001").is_dir()


def test_overwrite_deletes_a_run_folder_and_starts_over(config_path, reference, tmp_path):
    _killed_run(config_path, tmp_path / "run", steps=1)
    (tmp_path / "run" / "stale.txt").write_text("from the old run")
    code, output = cli_outcome(["train", str(config_path), "--out", str(tmp_path / "run"), "--overwrite"])
    assert code == 0, output
    assert not (tmp_path / "run" / "stale.txt").exists() and (tmp_path / "run" / MARKER).is_file()
    _assert_same(reference, tmp_path / "run")
