"""Builders shared by several test modules (import as `from tests.helpers import ...`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_random_photos(folder: Path, count: int, size_hw: tuple[int, int], suffix: str = ".png") -> list[Path]:
    """`count` seeded random RGB images p0..p{count-1} of (H, W) `size_hw` in `folder` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = [folder / f"p{index}{suffix}" for index in range(count)]
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (*size_hw, 3), dtype=np.uint8)).save(path)
    return paths


def randomised_dual_lora_model():
    """Tiny frozen components with a dual LoRA and a Uni-adapter whose LoRA-B and adapter weights are randomised (so
    each visibly changes the output); returns (components, adapter)."""
    from atelier.diffusion.components import build_tiny_components, freeze
    from atelier.diffusion.lora import LoraSettings
    from atelier.methods.unidllora.dual_lora import add_dual_lora
    from atelier.methods.unidllora.uni_adapter import build_uni_adapter

    components = build_tiny_components()
    freeze(components.unet, components.vae, components.text_encoder)
    add_dual_lora(components.unet, LoraSettings(rank=4, alpha=8.0))
    adapter = build_uni_adapter(components.unet, components.latent_scale, num_res_blocks=1).eval()
    with torch.no_grad():
        for name, param in [*components.unet.named_parameters(), *adapter.named_parameters()]:
            if ".lora_B." in name or "adapter" in name:
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    return components, adapter


def run_command(module, argv: list[str]) -> int:
    """Run one subcommand module with its own parser, as atelier.cli does, but let errors raise (argv: no command name)."""
    parser = argparse.ArgumentParser(prog="atelier")
    subparsers = parser.add_subparsers(dest="command")
    module.add_parser(subparsers)
    args = parser.parse_args([next(iter(subparsers.choices)), *argv])
    return args.func(args)


def cli_outcome(argv: list[str]) -> tuple[int, str]:
    """Run `atelier ARGV` in this process; return (exit code, everything it printed to stdout and stderr).

    An exception that escapes the CLI is not re-raised: it is returned as exit code -1 with its traceback in the text,
    so a bad-input table can assert "no traceback" row by row."""
    import contextlib
    import io
    import traceback

    from atelier.cli import main

    stream = io.StringIO()
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code if isinstance(exit_.code, int) else 2
        except BaseException:  # noqa: BLE001 - reported to the caller as a traceback, which the tables forbid
            stream.write(traceback.format_exc())
            code = -1
    return code, stream.getvalue()


def write_scrfd_stand_in(path: Path, detections: dict) -> Path:
    """A stand-in SCRFD detector ONNX file (64x64 input, antelopev2's nine outputs: scores, box distances, landmark
    offsets per stride 8/16/32, two anchors a cell) whose outputs are fixed: `detections` maps (stride, anchor row) to
    (score, box distance, 10 landmark offsets or None); every other anchor scores 0."""
    rows = {8: 8 * 8 * 2, 16: 4 * 4 * 2, 32: 2 * 2 * 2}
    outputs = {stride: [np.zeros((n, 1)), np.zeros((n, 4)), np.zeros((n, 10))] for stride, n in rows.items()}
    for (stride, row), (score, distance, landmarks) in detections.items():
        outputs[stride][0][row], outputs[stride][1][row] = score, distance
        if landmarks is not None:
            outputs[stride][2][row] = landmarks
    flat = [outputs[s][k] for k in range(3) for s in (8, 16, 32)]

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for index, array in enumerate(flat):
                self.register_buffer(f"out{index}", torch.tensor(array, dtype=torch.float32)[None])

        def forward(self, x):
            zero = x.mean() * 0
            return tuple(getattr(self, f"out{index}") + zero for index in range(9))

    torch.onnx.export(Model().eval(), (torch.zeros(1, 3, 64, 64),), str(path), input_names=["input.1"], dynamo=False)
    return path


def assert_same_trainable(run: Path, other: Path, step: int, prefix: str) -> None:
    """The trainable weights two runs saved at `step` are equal to the bit (an interrupted and resumed run against an
    uninterrupted one), and some of them start with `prefix` (the parts that should train do)."""
    from safetensors.torch import load_file

    name = f"step-{step:07d}"
    resumed = load_file(str(run / "checkpoints" / name / "trainable.safetensors"))
    straight = load_file(str(other / "checkpoints" / name / "trainable.safetensors"))
    assert resumed.keys() == straight.keys() and any(k.startswith(prefix) for k in straight)
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


def quick_overrides(model_dir: Path, data_root: Path, steps: int = 2, *extra: str) -> list[str]:
    """`atelier train` overrides for a few steps of a tiny model on a test dataset: batch 2, a checkpoint and a log line
    every step, 2 sampling steps (then `extra`)."""
    return [f"model.base={model_dir}", f"data.root={data_root}", f"train.max_steps={steps}", "train.batch_size=2",
            "train.checkpoint_every=1", "train.log_every=1", "sample.steps=2", *extra]


def train_run(config: Path, overrides: list[str], out: Path) -> Path:
    """Train `config` with `overrides` into `out` through the CLI (asserting success); return `out`."""
    from atelier.cli import main

    assert main(["train", str(config), *overrides, "--out", str(out)]) == 0
    return out


def assert_resumes_exactly(config: Path, overrides: list[str], out: Path, uninterrupted: Path, prefix: str) -> None:
    """Train `config` 1 step into `out`, stop, resume to its end in a fresh task: the trainable weights at step 2 equal
    those of `uninterrupted` (the same settings trained without a stop), and some start with `prefix`."""
    import copy

    from atelier.registry import build_task, load_config
    from atelier.training.loop import train

    cfg = load_config(config, overrides)
    train(build_task(cfg), cfg.train, out, config=cfg, stop_after=1)
    train(build_task(copy.deepcopy(cfg)), cfg.train, out, config=cfg, resume=True)
    assert_same_trainable(out, uninterrupted, 2, prefix)
