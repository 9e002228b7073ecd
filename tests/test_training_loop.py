import json

import pytest
import torch
from safetensors.torch import load_file

from atelier.config import ModelConfig, TrainConfig
from atelier.errors import UserError
from atelier.training.loop import batch_indices, learning_rate, total_steps, train
from atelier.training.losses import DiffusionLossConfig, sample_timesteps
from atelier.training.tasks.text2img import CaptionedDataConfig, SampleConfig, Text2ImgConfig, Text2ImgTask


def test_batch_indices_walk_through_seeded_permutations():
    first_epoch = sum((batch_indices(10, 5, step, seed=3) for step in range(2)), [])
    assert sorted(first_epoch) == list(range(10))
    assert batch_indices(10, 5, 7, seed=3) == batch_indices(10, 5, 7, seed=3)
    assert batch_indices(10, 5, 0, seed=3) != batch_indices(10, 5, 0, seed=4)


def test_learning_rate_schedules():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, lr_schedule="cosine")
    assert learning_rate(cfg, 0, 100) == pytest.approx(0.25)
    assert learning_rate(cfg, 4, 100) == pytest.approx(1.0)
    assert learning_rate(cfg, 99, 100) < 0.01
    step = TrainConfig(lr=1.0, lr_schedule="step", lr_step_every=10, lr_step_gamma=0.1)
    assert learning_rate(step, 25, 100) == pytest.approx(0.01)
    assert total_steps(TrainConfig(epochs=2, batch_size=4, gradient_accumulation=2), 17) == 6


@pytest.mark.parametrize("total", [10, 97, 100])
def test_onecycle_is_torchs_one_cycle_step_for_step(total):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=3e-4)
    reference = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-4, total_steps=total)
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step() if len(expected) < total else None
    cfg = TrainConfig(lr=3e-4, lr_schedule="onecycle")
    assert [learning_rate(cfg, step, total) for step in range(total)] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    with pytest.raises(UserError, match="warmup_steps"):
        TrainConfig(lr_schedule="onecycle", warmup_steps=10).validate()


def test_train_strength_bounds_sampled_timesteps():
    generator = torch.Generator().manual_seed(0)
    t = sample_timesteps(5000, 1000, DiffusionLossConfig(train_strength=0.3), generator, torch.device("cpu"))
    assert int(t.max()) < 300 and int(t.min()) >= 0 and int(t.max()) > 280
    cubic = sample_timesteps(5000, 1000, DiffusionLossConfig(timestep_sampling="cubic"), generator, torch.device("cpu"))
    assert float(cubic.float().mean()) > 600  # cubic sampling favours noisy timesteps (mean 750)


def _config(root, tiny_model_dir, steps=6):
    return Text2ImgConfig(
        model=ModelConfig(base=str(tiny_model_dir)),
        data=CaptionedDataConfig(root=str(root), resolution=(32, 32), flip=True),
        train=TrainConfig(max_steps=steps, batch_size=4, gradient_accumulation=2, lr=1e-3, lr_schedule="cosine",
                          warmup_steps=2, checkpoint_every=2, log_every=1, ema_decay=0.9),
        sample=SampleConfig(prompts=["a red dress"], steps=2),
    )


def test_killed_and_resumed_run_ends_with_identical_weights(synth_root, tiny_model_dir, tmp_path):
    root = synth_root / "style" / "photo"
    train(Text2ImgTask(_config(root, tiny_model_dir)), _config(root, tiny_model_dir).train, tmp_path / "a")
    interrupted = train(Text2ImgTask(_config(root, tiny_model_dir)), _config(root, tiny_model_dir).train, tmp_path / "b", stop_after=3)
    assert interrupted.steps == 3 and not (tmp_path / "b" / "final").exists()
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step-0000002"]
    resumed = train(Text2ImgTask(_config(root, tiny_model_dir)), _config(root, tiny_model_dir).train, tmp_path / "b", resume=True)
    assert resumed.steps == 6
    a = load_file(str(tmp_path / "a" / "final" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "final" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "a" / "loss.png").stat().st_size > 1000


def test_sampling_during_training_writes_images(synth_root, tiny_model_dir, tmp_path):
    cfg = _config(synth_root / "style" / "photo", tiny_model_dir, steps=2)
    cfg.train.sample_every = 1
    train(Text2ImgTask(cfg), cfg.train, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step-0000001.png", "step-0000002.png"]
