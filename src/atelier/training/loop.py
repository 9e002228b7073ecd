"""The one training loop (read it top to bottom, like nanoGPT's train.py).

A task (atelier.training.tasks.*) owns its models, data and loss; this loop owns everything else: data order,
gradient accumulation, mixed precision, clipping, learning-rate schedule, EMA, logging, checkpoints and resume,
periodic samples. Resume is exact: data order and noise are functions of (seed, step), so a run killed and resumed
ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from atelier.config import TrainConfig, save_yaml
from atelier.errors import UserError
from atelier.utils.io import save_safetensors, write_json
from atelier.utils.progress import progress

logger = logging.getLogger(__name__)


class TrainingTask(Protocol):
    """What the loop needs from a task."""

    def num_examples(self) -> int: ...

    def collate(self, indices: list[int]) -> Any: ...

    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...

    def training_loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor: ...

    def trainable_state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...

    def save_outputs(self, folder: Path) -> None: ...

    def sample(self, folder: Path, step: int) -> None: ...


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float
    seconds: float
    losses: list[tuple[int, float]]


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate at optimizer step `step` (0-based): linear warm-up, then the configured schedule."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress_fraction = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress_fraction))
    if cfg.lr_schedule == "linear":
        return cfg.lr * max(0.0, 1 - progress_fraction)
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_step_gamma ** ((step - cfg.warmup_steps) // cfg.lr_step_every)
    return cfg.lr


def batch_indices(num_examples: int, batch_size: int, micro_step: int, seed: int) -> list[int]:
    """Indices of micro-batch `micro_step` in a stream of per-epoch permutations (a pure function, so resume is exact)."""
    indices = []
    for position in range(micro_step * batch_size, (micro_step + 1) * batch_size):
        epoch, offset = divmod(position, num_examples)
        order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        indices.append(int(order[offset]))
    return indices


def total_steps(cfg: TrainConfig, num_examples: int) -> int:
    """Optimizer steps of the run: `epochs` when set, else `max_steps`."""
    if cfg.epochs is None:
        return cfg.max_steps
    per_epoch = math.ceil(num_examples / (cfg.batch_size * cfg.gradient_accumulation))
    return max(1, cfg.epochs * per_epoch)


def _make_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    fused = {"fused": True} if params and params[0].is_cuda else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.adam_betas, **fused)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay, **fused)


def _latest_checkpoint(run_dir: Path) -> Path | None:
    folders = sorted((run_dir / "checkpoints").glob("step-*"))
    return folders[-1] if folders else None


def _save_checkpoint(run_dir: Path, step: int, task: TrainingTask, optimizer, ema: dict | None, cfg: TrainConfig, config: Any) -> None:
    """Write checkpoints/step-N atomically (a temp folder renamed into place), keeping the newest `keep_checkpoints`."""
    folder = run_dir / "checkpoints" / f"step-{step:07d}"
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_safetensors(task.trainable_state_dict(), tmp / "trainable.safetensors")
    if ema is not None:
        save_safetensors(ema, tmp / "ema.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    write_json(tmp / "state.json", {"step": step})
    if config is not None:
        save_yaml(config, tmp / "config.yaml")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    for old in sorted((run_dir / "checkpoints").glob("step-*"))[: -cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, task: TrainingTask, optimizer, ema: dict | None) -> int:
    from safetensors.torch import load_file

    task.load_trainable_state_dict(load_file(str(folder / "trainable.safetensors")))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu"))
    if ema is not None and (folder / "ema.safetensors").exists():
        ema.update(load_file(str(folder / "ema.safetensors")))
    return int(json.loads((folder / "state.json").read_text())["step"])


def _read_log(path: Path, up_to_step: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["step"] <= up_to_step]


def train(task: TrainingTask, cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False, config: Any = None,
          stop_after: int | None = None) -> TrainResult:
    """Run (or resume) training; `stop_after` ends early after that many steps, as a kill would (for tests)."""
    from accelerate import Accelerator

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    params = task.trainable_parameters()
    if not params:
        raise UserError("the task has no trainable parameters; check the config's trainable-part settings")
    optimizer = _make_optimizer(cfg, params)
    ema = {name: value.detach().clone() for name, value in task.trainable_state_dict().items()} if cfg.ema_decay else None
    n_examples = task.num_examples()
    steps = total_steps(cfg, n_examples)

    start = 0
    checkpoint = _latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        logger.info("--resume: no checkpoint in %s, starting from step 0", run_dir / "checkpoints")
    if checkpoint is not None:
        start = _load_checkpoint(checkpoint, task, optimizer, ema)
        logger.info("resumed from %s (step %d of %d)", checkpoint, start, steps)
    if config is not None:
        save_yaml(config, run_dir / "config.yaml")
    log_path = run_dir / "log.jsonl"
    log_rows = _read_log(log_path, start)
    log_path.write_text("".join(json.dumps(row) + "\n" for row in log_rows))

    world, rank = accelerator.num_processes, accelerator.process_index
    started = time.time()
    bar = progress(total=steps, initial=start, desc="train", enabled=accelerator.is_main_process)
    loss_value = float("nan")
    end = steps if stop_after is None else min(steps, start + stop_after)
    for step in range(start, end):
        lr = learning_rate(cfg, step, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro in range(cfg.gradient_accumulation):
            micro_step = step * cfg.gradient_accumulation + micro
            indices = batch_indices(n_examples, cfg.batch_size, micro_step, cfg.seed)[rank::world]
            seed = cfg.seed * 1_000_003 + micro_step * 7919 + rank
            torch.manual_seed(seed)  # dropout and any other global-RNG use are a function of the step too
            generator = torch.Generator(device=accelerator.device).manual_seed(seed)
            with accelerator.autocast():
                loss = task.training_loss(task.collate(indices), generator) / cfg.gradient_accumulation
            accelerator.backward(loss)
            loss_sum += float(loss.detach())
        if world > 1:
            for param in params:
                if param.grad is not None:
                    param.grad = accelerator.reduce(param.grad, reduction="mean")
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        if ema is not None:
            with torch.no_grad():
                for name, value in task.trainable_state_dict().items():
                    ema[name].lerp_(value.detach(), 1 - cfg.ema_decay)
        loss_value = loss_sum
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if accelerator.is_main_process:
            if done % cfg.log_every == 0 or done == steps:
                row = {"step": done, "loss": loss_value, "lr": lr, "seconds": round(time.time() - started, 3)}
                log_rows.append(row)
                with log_path.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
            if done % cfg.checkpoint_every == 0 or done == steps:
                _save_checkpoint(run_dir, done, task, optimizer, ema, cfg, config)
            if cfg.sample_every and (done % cfg.sample_every == 0 or done == steps):
                task.sample(run_dir / "samples", done)
    bar.close()
    if accelerator.is_main_process and end == steps:
        if ema is not None:
            task.load_trainable_state_dict(ema)
        task.save_outputs(run_dir / "final")
        if config is not None:
            save_yaml(config, run_dir / "final" / "config.yaml")
        plot_losses(log_rows, run_dir / "loss.png")
    return TrainResult(run_dir, end, loss_value, time.time() - started, [(r["step"], r["loss"]) for r in log_rows])


def plot_losses(rows: list[dict], path: Path, title: str = "training loss") -> None:
    """Loss curve (raw and smoothed) as a PNG."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atelier.utils.io import atomic_path

    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    smooth, value = [], losses[0]
    for loss in losses:
        value = 0.9 * value + 0.1 * loss
        smooth.append(value)
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(steps, losses, alpha=0.35, label="loss")
    ax.plot(steps, smooth, label="smoothed")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
