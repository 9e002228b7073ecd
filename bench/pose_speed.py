"""CFLD and MCLD speed: training step time and sampling time per image, in the same run, beside the published cost
figures (docs/cfld.md).

Published (measured by the MCLD authors on an A6000): CFLD inference 3.55 s/image (DDPM 50 steps, three guidance
branches) in 6.5 GB; training 353.6 GPU-hours for 100 epochs of 455 steps x 224 pairs on 8 GPUs (46.6 GB each),
i.e. 0.125 GPU-seconds per training pair.

Sizes (random weights: speed does not depend on them):
- `full`: CFLD at SD 1.5 size (UNet 860M, SD VAE, Swin-B window 16, decoder 16 x 768 x 8 blocks, hybrid attention on
  all 9 up-block transformers), 512x512 output, 256x256 source and pose map, bf16 autocast, gradient checkpointing,
  images read and VAE-encoded per batch as `task: pose` does; runs on a CUDA GPU (skipped without one, unless --device).
- `tiny`: the demo's tiny CFLD on the tiny base at 64x48, data cached in memory as the demo does, on CPU.
Both run the real code path: `PoseTask.collate` + `training_loss` + backward + Adam step on FashionSynth pairs, and
`methods.cfld.sample.transfer` (DDPM, 50 steps, three branches in one batched UNet call).

MCLD (`--methods mcld`) at the same sizes: `full` is two SD 1.5 UNets (denoising and reference), the paper's pose guider
and face projector, a CLIP ViT-L/14 image encoder with random weights, 512x512 image and texture; `tiny` is the demo's
(configs/tiny-mcld.yaml, 32x32 texture) at 64x48. Training: `MCLDTask.collate` + `training_loss` + backward +
AdamW over what the paper trains; sampling: `methods.mcld.sample.transfer` as MCLD samples (DDIM, 20 steps, guidance
3.5: two UNet calls per step; the reference UNet once per image, before the loop).

    python bench/pose_speed.py [--sizes tiny full] [--methods cfld mcld] [--train-batch N] [--sample-batches 1 16]
                               [--steps 50] [--mcld-steps 20] [--repeats 3]

Writes bench/results/pose_speed.json atomically (machine, versions, date, settings, numbers) and prints a table with the
published figures beside ours.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "pose_speed.json"
PUBLISHED = {"source": "MCLD (CVPR 2025) cost table, NVIDIA RTX A6000", "inference_s_per_image": 3.55,
             "inference_memory_gb": 6.5, "training_gpu_hours": 353.6, "training_memory_gb_per_gpu": 46.6,
             "training_gpu_s_per_pair": round(353.6 * 3600 / (100 * 455 * 224), 4)}


def components(size: str):
    """SD components with random weights: SD 1.5's shapes (`full`) or the tiny model (`tiny`)."""
    from atelier.diffusion.components import build_sd15_components, build_tiny_components

    if size == "tiny":
        return build_tiny_components()
    return build_sd15_components(seed=0, text_encoder=False)


def pose_config(size: str, root: Path, batch: int):
    from atelier.config import ModelConfig, TrainConfig
    from atelier.methods.cfld.network import tiny_cfld_config
    from atelier.methods.cfld.train import PoseConfig, PoseDataConfig, paper_train_config

    if size == "tiny":
        data = PoseDataConfig(root=str(root), image_size=(64, 48), appearance_size=(64, 48), pose_size=(64, 48), cache=True)
        return PoseConfig(model=ModelConfig("tiny"), cfld=tiny_cfld_config(), data=data,
                          train=TrainConfig(batch_size=batch, optimizer="adam", mixed_precision="no"))
    train = paper_train_config()
    train.batch_size = batch
    return PoseConfig(data=PoseDataConfig(root=str(root)), train=train)


def mcld_config(size: str, root: Path, batch: int):
    from atelier.config import ModelConfig, TrainConfig
    from atelier.methods.mcld.network import tiny_mcld_config
    from atelier.methods.mcld.train import MCLDConfig, MCLDDataConfig, paper_train_config

    if size == "tiny":
        net = tiny_mcld_config()
        net.projector.embedding_dim = 14  # FashionSynth's identity vector
        return MCLDConfig(model=ModelConfig("tiny"), mcld=net, clip_image="tiny",
                          data=MCLDDataConfig(root=str(root), image_size=(64, 48), texture_size=(32, 32), cache=True),
                          train=TrainConfig(batch_size=batch, optimizer="adamw", mixed_precision="no"))
    train = paper_train_config()
    train.batch_size = batch
    return MCLDConfig(clip_image=CLIP_L14, data=MCLDDataConfig(root=str(root)), train=train)


CLIP_L14 = "random-vit-l-14"  # stands for sd-image-variations-diffusers/image_encoder: CLIP ViT-L/14, random weights


def clip_l14():
    """A CLIP ViT-L/14 image encoder (the shape of the one MCLD uses) with random weights."""
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

    from atelier.methods.mcld.clip_image import CLIPImageEncoder

    config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=224, patch_size=14, projection_dim=768)
    return CLIPImageEncoder(CLIPVisionModelWithProjection(config).eval().requires_grad_(False), CLIPImageProcessorPil())


def time_training(task, cfg, device: str, steps: int) -> float:
    """Median seconds of one optimizer step (collate, loss, backward, Adam), after one warm-up step."""
    params = task.trainable_parameters()
    optimizer = torch.optim.Adam(params, lr=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.mixed_precision)
    times = []
    for step in range(steps + 1):
        generator = torch.Generator(device=device).manual_seed(step)
        started = time.perf_counter()
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            batch = [i % task.num_examples() for i in range(step * cfg.train.batch_size, (step + 1) * cfg.train.batch_size)]
            loss = task.training_loss(task.collate(batch), generator, step)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return sorted(times[1:])[len(times[1:]) // 2]


def best_seconds_per_image(work, device: str, batch: int, repeats: int) -> float:
    """Best of `repeats` timings of work() (bf16 autocast on CUDA), divided by the `batch` images it makes."""
    dtype = torch.bfloat16 if device.startswith("cuda") else None
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            work()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - started) / batch)
    return best


def time_sampling(task, device: str, batch: int, steps: int, repeats: int) -> float:
    """Best seconds per image of `transfer` (DDPM, `steps` steps, three branches) at a batch of `batch` pairs."""
    from atelier.methods.cfld.sample import transfer

    items = [task.pairs[i % len(task.pairs)] for i in range(batch)]
    appearance, pose = torch.stack([it.appearance for it in items]), torch.stack([it.target_pose for it in items])
    task.cfld.eval()
    best = best_seconds_per_image(lambda: transfer(task.model, appearance, pose, steps=steps, scheduler="ddpm",
                                                   show_progress=False), device, batch, repeats)
    task.cfld.train()
    return best


def time_mcld_sampling(task, device: str, batch: int, steps: int, repeats: int) -> float:
    """Best seconds per image of MCLD's `transfer` (DDIM, `steps` steps, guidance 3.5) at a batch of `batch` pairs."""
    from atelier.methods.mcld.sample import transfer
    from atelier.methods.mcld.train import read_pair

    items = [read_pair(task.split.image_dir, *task.pairs[i % len(task.pairs)], task.model) for i in range(batch)]
    source, texture, iuv, face = (torch.stack(part) for part in list(zip(*items))[:4])
    task.net.eval()
    best = best_seconds_per_image(lambda: transfer(task.model, source, texture, iuv, face, steps=steps,
                                                   guidance_scale=3.5, show_progress=False), device, batch, repeats)
    task.net.train()
    return best


def build_task(method: str, size: str, device: str, root: Path, batch: int):
    """(task, its config) of `method` at `size` on `device`."""
    if method == "cfld":
        from atelier.methods.cfld.train import PoseTask

        cfg = pose_config(size, root, batch)
        return PoseTask(cfg, components=components(size), device=device), cfg
    from unittest import mock

    from atelier.methods.mcld import model as mcld_model
    from atelier.methods.mcld.train import MCLDTask

    cfg = mcld_config(size, root, batch)
    if size == "tiny":
        return MCLDTask(cfg, components=components(size), device=device), cfg
    with mock.patch.object(mcld_model, "load_clip_image_encoder", lambda spec: clip_l14()):
        return MCLDTask(cfg, components=components(size), device=device), cfg


def measure(method: str, size: str, device: str, args: argparse.Namespace, root: Path) -> dict:
    batch = args.train_batch or (8 if size == "full" else 16)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    task, cfg = build_task(method, size, device, root, batch)
    step = time_training(task, cfg, device, args.train_steps)
    steps = args.steps if method == "cfld" else args.mcld_steps
    result = {"device": device, "train_pairs_per_step": batch, "train_s_per_step": round(step, 4),
              "train_s_per_pair": round(step / batch, 4), "sample_steps": steps, "sample_s_per_image": {}}
    if device.startswith("cuda"):
        result["train_peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    timer = time_sampling if method == "cfld" else time_mcld_sampling
    for sample_batch in args.sample_batches:
        result["sample_s_per_image"][str(sample_batch)] = round(timer(task, device, sample_batch, steps, args.repeats), 4)
    if device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(0)
    return result


def print_table(results: dict) -> None:
    print(f"{'method':<7}{'size':<6}{'device':<8}{'train s/step':>14}{'pairs':>7}{'s/pair':>9}  sampling s/image "
          "(steps; batch: value)")
    for method, sizes in results.items():
        for size, row in sizes.items():
            if "skipped" in row:
                print(f"{method:<7}{size:<6}skipped: {row['skipped']}")
                continue
            samples = ", ".join(f"{b}: {v:.3f}" for b, v in row["sample_s_per_image"].items())
            print(f"{method:<7}{size:<6}{row['device'][:7]:<8}{row['train_s_per_step']:>14.3f}{row['train_pairs_per_step']:>7}"
                  f"{row['train_s_per_pair']:>9.4f}  ({row['sample_steps']}) {samples}")
    for size in next(iter(results.values()), {}):  # MCLD against CFLD, same size, same run
        rows = [results.get(method, {}).get(size, {}) for method in ("mcld", "cfld")]
        if all("train_s_per_pair" in row for row in rows):
            batches = [b for b in rows[0]["sample_s_per_image"] if b in rows[1]["sample_s_per_image"]]
            ratios = ", ".join(f"batch {b}: {rows[0]['sample_s_per_image'][b] / rows[1]['sample_s_per_image'][b]:.2f}x"
                               for b in batches)
            print(f"mcld / cfld at {size}: training {rows[0]['train_s_per_pair'] / rows[1]['train_s_per_pair']:.2f}x per "
                  f"pair; sampling per image (each at its paper's steps) {ratios}")
    print(f"published (A6000, full size): training {PUBLISHED['training_gpu_s_per_pair']} GPU-s/pair "
          f"({PUBLISHED['training_gpu_hours']} GPU-hours), inference {PUBLISHED['inference_s_per_image']} s/image")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    parser.add_argument("--methods", nargs="+", default=["cfld", "mcld"], choices=["cfld", "mcld"])
    parser.add_argument("--device", help="device for `full` (default: cuda when present, else skipped)")
    parser.add_argument("--train-batch", type=int, help="pairs per training step (default 8 full, 16 tiny)")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps after one warm-up (default 3)")
    parser.add_argument("--sample-batches", type=int, nargs="+", default=[1, 16], help="sampling batch sizes (default 1 16)")
    parser.add_argument("--steps", type=int, default=50, help="CFLD's sampling steps (default 50, as CFLD)")
    parser.add_argument("--mcld-steps", type=int, default=20, help="MCLD's sampling steps (default 20, as MCLD)")
    parser.add_argument("--repeats", type=int, default=2, help="sampling repeats, best kept (default 2)")
    args = parser.parse_args(argv)

    import diffusers
    import transformers

    from atelier import __version__
    from atelier.data.synth import synthesize
    from atelier.utils.io import write_json

    results: dict[str, dict] = {method: {} for method in args.methods}
    with tempfile.TemporaryDirectory(prefix="pose-bench-") as folder:
        for size in args.sizes:
            device = "cpu" if size == "tiny" else args.device or ("cuda" if torch.cuda.is_available() else None)
            root = Path(folder) / size
            for method in args.methods:
                if device is None:
                    results[method][size] = {"skipped": "no CUDA GPU (pass --device cpu to force; minutes per step)"}
                    continue
                if not root.exists():  # with MCLD's conditions: one draw for both methods
                    synthesize(root, identities=8, poses_per_identity=3, size=(176, 256), seed=0, workers=1, conditions=True)
                results[method][size] = measure(method, size, device, args, root / "deepfashion")
                print(f"{method} {size}: {results[method][size]}", flush=True)
    print_table(results)
    write_json(RESULTS, {
        "benchmark": "pose_speed",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": {"python": sys.version.split()[0], "atelier": __version__, "torch": torch.__version__,
                     "diffusers": diffusers.__version__, "transformers": transformers.__version__},
        "settings": vars(args),
        "published": PUBLISHED,
        "results": results,
    })  # fmt: skip
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
