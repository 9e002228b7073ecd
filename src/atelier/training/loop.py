"""The one training loop (read it top to bottom, like nanoGPT's train.py).

A task (atelier.training.tasks.*, atelier.methods.*.train, each built on atelier.training.base.TaskBase) owns its
models, data and loss; this loop owns everything else: data order, gradient accumulation, mixed precision, clipping,
learning-rate schedule, EMA, logging, checkpoints and resume, periodic samples. Resume is exact: data order and noise
are functions of (seed, step), and the step reaches the task's loss, so a run killed and resumed ends with the same
weights as one that never stopped. A checkpoint that does not read whole (truncated, a file missing) is skipped, with
a warning naming it, for the one before; a log line a kill cut in half is dropped. The run folder is marked as this
task's run (atelier.training.run_dir), so another task's config cannot resume into it.

Speed, each feature a TrainConfig switch (docs/speed.md, "Training"): the fused Adam/AdamW kernel (on by default where
the device supports it); gradient checkpointing, channels-last memory order and torch.compile of the task's per-step
model (`step_modules`); no host sync in the step (the loss is read on logged steps only); EMA in one foreach update.
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
from typing import Any, Callable, Protocol

import torch

from atelier.config import TrainConfig, save_yaml
from atelier.diffusion.speed import compiler_error, error_line
from atelier.errors import UserError
from atelier.training.run_dir import claim_run_dir
from atelier.utils.io import save_safetensors, write_json, write_text
from atelier.utils.plot import plot_losses
from atelier.utils.progress import progress

logger = logging.getLogger(__name__)


class TrainingTask(Protocol):
    """What the loop needs from a task."""

    def num_examples(self) -> int: ...

    def collate(self, indices: list[int]) -> Any: ...

    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...

    def step_modules(self) -> list[torch.nn.Module]:
        """The model(s) that run forward and backward every step (what checkpointing, channels-last, compile act on)."""
        ...

    def training_loss(self, batch: Any, generator: torch.Generator, step: int) -> torch.Tensor:
        """The loss of one micro-batch of optimizer step `step` (0-based): what a task that changes with the step (the
        dual LoRA's domain) reads, instead of counting calls, which a resumed run would not replay."""
        ...

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
    first_step_seconds: float = float("nan")  # includes one-time costs, torch.compile's compilation when on


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate at optimizer step `step` (0-based): linear warm-up, then the configured schedule. `onecycle` is
    torch's OneCycleLR with its defaults (cosine from lr/25 up to lr over the first 30% of the steps, then down to
    lr/25e4), step for step; the learning rate only: torch also cycles Adam's beta1 by default, atelier keeps betas fixed."""
    if cfg.lr_schedule == "onecycle":
        start, peak_step = cfg.lr / 25, 0.3 * total - 1
        if step <= peak_step:
            return _cosine_between(start, cfg.lr, step / max(peak_step, 1e-12))
        return _cosine_between(cfg.lr, start / 1e4, (step - peak_step) / max(total - 1 - peak_step, 1e-12))
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


def _cosine_between(start: float, end: float, fraction: float) -> float:
    """From `start` (fraction 0) to `end` (fraction 1) along half a cosine."""
    return end + (start - end) / 2 * (math.cos(math.pi * min(fraction, 1.0)) + 1)


def batch_indices(num_examples: int, batch_size: int, micro_step: int, seed: int) -> list[int]:
    """Indices of micro-batch `micro_step` in a stream of per-epoch permutations (a pure function, so resume is exact)."""
    indices, orders = [], {}
    for position in range(micro_step * batch_size, (micro_step + 1) * batch_size):
        epoch, offset = divmod(position, num_examples)
        if epoch not in orders:  # a batch spans at most a few epochs: draw each permutation once
            orders[epoch] = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        indices.append(int(orders[epoch][offset]))
    return indices


def total_steps(cfg: TrainConfig, num_examples: int) -> int:
    """Optimizer steps of the run: `epochs` when set, else `max_steps`."""
    if cfg.epochs is None:
        return cfg.max_steps
    per_epoch = math.ceil(num_examples / (cfg.batch_size * cfg.gradient_accumulation))
    return max(1, cfg.epochs * per_epoch)


FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda", "xpu", "mps")  # where torch has fused Adam/AdamW kernels


def fused_optimizer_supported(params: list[torch.nn.Parameter]) -> bool:
    """Whether torch's fused Adam/AdamW kernel covers these parameters: floating point, all on one supported device."""
    devices = {param.device.type for param in params}
    return len(devices) == 1 and devices <= set(FUSED_OPTIMIZER_DEVICES) and all(p.is_floating_point() for p in params)


def make_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter],
                   groups: list[dict[str, Any]] | None = None) -> torch.optim.Optimizer:
    """Adam or AdamW as configured; fused (one kernel for every tensor) when `fused_optimizer` is on and supported.
    `groups`: the parameters in groups, each {"params": [...], "lr_scale": s} learning at s times the schedule's rate."""
    fused = {"fused": True} if cfg.fused_optimizer and fused_optimizer_supported(params) else {}
    groups = groups if groups is not None else [{"params": params}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.adam_betas, **fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay, **fused)


def compile_for_training(module: torch.nn.Module, backend: str | Callable = "inductor") -> bool:
    """torch.compile `module`'s training forward in place; calls in eval mode or without gradients (sampling) stay eager.

    When the compiler does not work here, or the module's first compiled call fails, one warning says so and the
    module runs eagerly. Returns whether the module is compiled.
    """
    if getattr(module.forward, "compiled_for_training", False):
        return True
    device = next(module.parameters()).device
    error = compiler_error(device.type, backend, backward=True)
    if error is not None:
        logger.warning("train.compile: torch.compile does not work on %s here (%s); training runs eagerly", device.type, error)
        return False
    eager = module.forward
    compiled: Callable | None = torch.compile(eager, backend=backend)
    first_call = True

    def forward(*args: Any, **kwargs: Any) -> Any:
        nonlocal compiled, first_call
        if compiled is None or not (module.training and torch.is_grad_enabled()):
            return eager(*args, **kwargs)
        if not first_call:
            return compiled(*args, **kwargs)
        first_call = False
        try:
            return compiled(*args, **kwargs)
        except Exception as error:  # compilation happens here; a genuine error of the model repeats in eager mode
            logger.warning("train.compile: compiling %s failed (%s); training runs eagerly", type(module).__name__,
                           error_line(error))
            compiled = None
            return eager(*args, **kwargs)

    forward.compiled_for_training = True
    module.forward = forward
    return True


def prepare_step_modules(task: TrainingTask, cfg: TrainConfig) -> None:
    """Gradient checkpointing, channels-last and torch.compile, as configured, on the task's per-step models."""
    for module in task.step_modules():
        if cfg.gradient_checkpointing:
            if not hasattr(module, "enable_gradient_checkpointing"):
                raise UserError(f"train.gradient_checkpointing: {type(module).__name__} cannot recompute its activations; "
                                "set it to false")
            module.enable_gradient_checkpointing()
        if cfg.channels_last:
            module.to(memory_format=torch.channels_last)  # parameters keep their identity (only their data moves)
        if cfg.compile:
            compile_for_training(module)


def _checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders, oldest first (step-N; a `.tmp-step-N` being written is not one)."""
    return sorted((run_dir / "checkpoints").glob("step-*"))


def _save_checkpoint(run_dir: Path, step: int, task: TrainingTask, optimizer, scaler, ema: dict | None, cfg: TrainConfig,
                     config: Any) -> None:
    """Write checkpoints/step-N atomically (a temp folder renamed into place), keeping the newest `keep_checkpoints`."""
    folder = run_dir / "checkpoints" / f"step-{step:07d}"
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_safetensors(task.trainable_state_dict(), tmp / "trainable.safetensors")
    if ema is not None:
        save_safetensors(ema, tmp / "ema.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), tmp / "grad_scaler.pt")
    write_json(tmp / "state.json", {"step": step})
    if config is not None:
        save_yaml(config, tmp / "config.yaml")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    for old in _checkpoints(run_dir)[: -cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)


def _read_checkpoint(folder: Path) -> dict[str, Any]:
    """Every file of a checkpoint, read into memory before any is applied: a damaged one (truncated, missing a file)
    raises here, with nothing half-loaded."""
    from safetensors.torch import load_file

    found: dict[str, Any] = {"step": json.loads((folder / "state.json").read_text(encoding="utf-8"))["step"]}
    if not isinstance(found["step"], int) or found["step"] < 1:
        raise ValueError(f"state.json: step {found['step']!r} is not a positive integer")
    found["trainable"] = load_file(str(folder / "trainable.safetensors"))
    found["optimizer"] = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
    if (folder / "grad_scaler.pt").exists():
        found["grad_scaler"] = torch.load(folder / "grad_scaler.pt", weights_only=True)
    if (folder / "ema.safetensors").exists():
        found["ema"] = load_file(str(folder / "ema.safetensors"))
    return found


def _newest_readable_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that reads whole; each damaged newer one is skipped with a warning naming it."""
    folders = _checkpoints(run_dir)
    damaged = []
    for folder in reversed(folders):
        try:
            return folder, _read_checkpoint(folder)
        except MemoryError:
            raise
        except Exception as error:  # any failure to read the files is damage (a kill, a full disk, a bad copy)
            reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
            logger.warning("--resume: checkpoint %s is damaged (%s); falling back to the previous one", folder, reason)
            damaged.append(folder)
    if damaged:
        raise UserError(f"--resume: every checkpoint in {run_dir / 'checkpoints'} is damaged (newest: {damaged[0]}); "
                        "start over with --overwrite, or restore a checkpoint folder")
    return None


def _apply_checkpoint(folder: Path, found: dict[str, Any], task: TrainingTask, optimizer, scaler,
                      ema: dict | None) -> int:
    """Load a read checkpoint into the task, optimizer, grad scaler and EMA; a mismatch names the checkpoint."""
    fix = "resume with the config the run was made with (its config.yaml), or start a new run without --resume"
    try:
        task.load_trainable_state_dict(found["trainable"])
    except UserError as error:  # say which checkpoint
        raise UserError(f"{folder / 'trainable.safetensors'}: {error}") from None
    try:
        optimizer.load_state_dict(found["optimizer"])
    except (ValueError, KeyError) as error:
        raise UserError(f"{folder / 'optimizer.pt'}: does not fit this task's optimizer ({error}); {fix}") from None
    if scaler is not None and "grad_scaler" in found:
        scaler.load_state_dict(found["grad_scaler"])
    if ema is not None and "ema" in found:
        ema.update(found["ema"])
    return found["step"]


def _read_log(path: Path, up_to_step: int) -> list[dict]:
    """The log's rows up to `up_to_step`; a line that does not parse (the half-written last line of a killed run) is
    dropped with a warning."""
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("not a log row")
        except ValueError:
            logger.warning("--resume: dropped line %d of %s, which is not a whole log row (a killed run's last write)",
                           number, path)
            continue
        rows.append(row)
    return [row for row in rows if row["step"] <= up_to_step]


def train(task: TrainingTask, cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False, config: Any = None,
          stop_after: int | None = None) -> TrainResult:
    """Run (or resume) training; `stop_after` ends early after that many steps, as a kill would (for tests)."""
    from accelerate import Accelerator

    cfg.validate("train")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    task_name = getattr(config, "task", None) or getattr(getattr(task, "cfg", None), "task", None)
    claim_run_dir(run_dir, task_name, write=accelerator.is_main_process)
    prepare_step_modules(task, cfg)
    params = task.trainable_parameters()
    if not params:
        raise UserError("the task has no trainable parameters; check the config's trainable-part settings")
    optimizer = make_optimizer(cfg, params, getattr(task, "parameter_groups", lambda: None)())
    scaler = accelerator.scaler  # fp16 on CUDA only: accelerator.backward scales the loss, the step must unscale
    ema = {name: value.detach().clone() for name, value in task.trainable_state_dict().items()} if cfg.ema_decay else None
    n_examples = task.num_examples()
    steps = total_steps(cfg, n_examples)

    start = 0
    checkpoint = _newest_readable_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        logger.info("--resume: no checkpoint in %s, starting from step 0", run_dir / "checkpoints")
    if checkpoint is not None:
        start = _apply_checkpoint(*checkpoint, task, optimizer, scaler, ema)
        logger.info("resumed from %s (step %d of %d)", checkpoint[0], start, steps)
    if config is not None:
        save_yaml(config, run_dir / "config.yaml")
    log_path = run_dir / "log.jsonl"
    log_rows = _read_log(log_path, start)
    write_text(log_path, "".join(json.dumps(row) + "\n" for row in log_rows))
    if ema is not None:  # the tensors EMA follows, paired once (after loading: a checkpoint may have replaced them)
        live = task.trainable_state_dict()
        ema_tensors, live_tensors = list(ema.values()), [live[name].detach() for name in ema]

    world, rank = accelerator.num_processes, accelerator.process_index
    started = time.time()
    first_step_seconds = float("nan")
    bar = progress(total=steps, initial=start, desc="train", enabled=accelerator.is_main_process)
    loss_value = float("nan")
    end = steps if stop_after is None else min(steps, start + stop_after)
    for step in range(start, end):
        lr = learning_rate(cfg, step, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = None  # summed where it is computed: reading it on the host would wait for the device every step
        for micro in range(cfg.gradient_accumulation):
            micro_step = step * cfg.gradient_accumulation + micro
            indices = batch_indices(n_examples, cfg.batch_size, micro_step, cfg.seed)[rank::world]
            seed = cfg.seed * 1_000_003 + micro_step * 7919 + rank
            torch.manual_seed(seed)  # dropout and any other global-RNG use are a function of the step too
            generator = torch.Generator(device=accelerator.device).manual_seed(seed)
            with accelerator.autocast():
                loss = task.training_loss(task.collate(indices), generator, step) / cfg.gradient_accumulation
            accelerator.backward(loss)
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        if world > 1:
            for param in params:
                if param.grad is not None:
                    param.grad = accelerator.reduce(param.grad, reduction="mean")
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip (and step with) the true gradients, not the loss-scaled ones
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)  # skipped when the fp16 gradients overflowed
            scaler.update()
        else:
            optimizer.step()
        if ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(ema_tensors, live_tensors, 1 - cfg.ema_decay)
        done = step + 1
        if step == start:
            first_step_seconds = time.time() - started
        bar.update(1)
        log_now = done % cfg.log_every == 0 or done == steps
        if log_now or done == end:
            loss_value = float(loss_sum)
            bar.set_postfix(loss=f"{loss_value:.4f}")
        if accelerator.is_main_process:
            if log_now:
                row = {"step": done, "loss": loss_value, "lr": lr, "seconds": round(time.time() - started, 3)}
                log_rows.append(row)
                with log_path.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
            if done % cfg.checkpoint_every == 0 or done == steps:
                _save_checkpoint(run_dir, done, task, optimizer, scaler, ema, cfg, config)
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
    return TrainResult(run_dir, end, loss_value, time.time() - started, [(r["step"], r["loss"]) for r in log_rows],
                       first_step_seconds)
