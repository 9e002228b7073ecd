"""Pose-transfer, LoRA-training and evaluation rows.

- pose: CFLD sampling (`methods.cfld.sample.transfer`, DDPM, three guidance branches in one batched UNet call),
  ours loaded with `SpeedConfig()` against the same model loaded with `SpeedConfig.plain()`: diffusers has no CFLD
  pipeline, so the reference is our own pipeline on the plain path (fp32, classic attention, nothing fused).
- training: `bench/style_lora_throughput.run` (atelier's loop against a loop written like diffusers' LoRA example).
- evaluation: `bench/eval_speed.run` (SSIM win 51 + PSNR against CFLD's per-image scikit-image loop).
"""

from __future__ import annotations

import os
import tempfile
from functools import partial

import torch

from bench._flops import lora_training_flops, split_per_call
from bench._measure import side_by_side, weight_bytes
from bench._report import Row
from bench._sizes import SuiteSize, build_pose_model, ours_speed


def pose_row(size: SuiteSize, components) -> Row:
    """Seconds per generated image of CFLD sampling at the size's batch, ours against the plain path."""
    from atelier.diffusion.speed import SpeedConfig, set_backend_flags
    from atelier.methods.cfld.model import load_pose_model, save_pose_model
    from atelier.methods.cfld.sample import transfer

    model = build_pose_model(size, components)
    with tempfile.TemporaryDirectory(prefix="bench-pose-") as folder:
        save_pose_model(model, folder)  # both sides load it as a user would, each with its speed settings
        models = {"reference": load_pose_model(folder, device=size.device, speed=SpeedConfig.plain()),
                  "ours": load_pose_model(folder, device=size.device, speed=ours_speed(size))}
    del model
    config = models["ours"].config
    generator = torch.Generator().manual_seed(0)
    appearance = torch.rand(size.pose_batch, 3, *config.appearance_size, generator=generator) * 2 - 1
    pose = torch.rand(size.pose_batch, 21, *config.pose_size, generator=generator)

    speeds = {"reference": SpeedConfig.plain(), "ours": ours_speed(size)}

    def sample(name: str, steps: int) -> object:
        set_backend_flags(speeds[name], size.device)  # process-wide flags: each side sets its own
        return transfer(models[name], appearance, pose, steps=steps, scheduler="ddpm", show_progress=False)

    fixed, per_call = split_per_call(lambda n: sample("reference", n))
    measured = side_by_side({name: partial(sample, name, size.pose_steps) for name in models},
                            {name: weight_bytes([m.cfld, m.vae]) for name, m in models.items()}, size.device,
                            size.repeats, {name: partial(sample, name, 2) for name in models})
    ours, reference = measured["ours"], measured["reference"]
    batch = size.pose_batch
    height, width = config.image_size
    return Row(f"pose transfer {height}x{width} (CFLD, {size.pose_steps} steps), batch {batch}", "s/img", ours.seconds / batch,
               reference.seconds / batch, ours.peak_bytes, reference.peak_bytes,
               flops=(fixed + size.pose_steps * per_call) // batch,
               warmup_s={"ours": ours.warmup_s, "reference": reference.warmup_s},
               details={"steps": size.pose_steps, "batch": batch, "image_hw": list(config.image_size),
                        "runs_s": {"ours": ours.runs, "reference": reference.runs}})


def training_row(size: SuiteSize, components) -> Row:
    """LoRA training images/s from `bench/style_lora_throughput.run` (best of up to 2 alternating runs; its peak
    memory is CUDA's whole-run peak, n/a on CPU); the bound from the UNet's forward + backward per image."""
    from bench import style_lora_throughput

    result = style_lora_throughput.run(size.train_steps, size.train_batch, size.train_hw, size=size.name,
                                       device=size.device_name, repeats=min(size.repeats, 2),
                                       identities=size.train_identities)
    scale = components.latent_scale
    latent_hw = (size.train_hw[0] // scale, size.train_hw[1] // scale)
    flops = lora_training_flops(components.unet, latent_hw, batch=1)
    peaks = result.get("peak_memory_bytes", {})
    height, width = size.train_hw
    return Row(f"LoRA training {height}x{width}, batch {size.train_batch}", "img/s", result["ours_images_per_second"],
               result["reference_images_per_second"], peaks.get("ours"), peaks.get("reference"), flops=flops,
               details=result)


def evaluation_row(size: SuiteSize, quick: bool) -> Row:
    """SSIM (win 51) + PSNR pairs/s from `bench/eval_speed.run` (CPU; no matrix work, so no compute bound)."""
    from bench import eval_speed

    workers = os.cpu_count() or 1
    result = eval_speed.run(size.eval_pairs, size.eval_hw, workers, cold_compile=not quick)
    seconds = result["seconds"]
    return Row(f"evaluation (SSIM + PSNR, {size.eval_hw[0]}x{size.eval_hw[1]})", "pairs/s",
               size.eval_pairs / seconds["ours"], size.eval_pairs / seconds["reference"],
               warmup_s={"ours": result.get("compile_seconds", {}).get("first_call_this_process") or 0.0},
               details=result)
