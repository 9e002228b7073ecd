"""Try-on speed: seconds per image of `atelier try-on`'s sampler, with the garment encoder run once per step
(StableVITON's noisy-input encoder, the reference) and once per image (the "garment" input; and IDM-VTON's garment
network, `net.fusion: reference-attention`, also once per image), and training step time.

StableVITON's garment encoder is a ControlNet-style copy of the UNet encoder that reads the noisy latent and the
timestep, so its features change every step and it must run once per step; with `net.garment_input: garment` it reads
the garment latent alone at timestep 0, so `methods.tryon.sample.generate` computes its features once per image and
every step runs the UNet only. Both paths are the real code (`generate`, and `TryOnTask.training_loss` + backward +
AdamW for training), on random weights (speed does not depend on them):
- `tiny`: the tiny base at 64x48 on CPU (what the tests and the demo's scale cost);
- `sd15`: SD-1.5's architecture at 512x384 (StableVITON's size), bf16, on a CUDA GPU (skipped without one).

    python bench/tryon_speed.py [--sizes tiny sd15] [--steps 20] [--batch 4] [--repeats 3]

Writes bench/results/tryon_speed.json atomically and prints the table with the ratio per-step / once-per-image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "tryon_speed.json"
SIZES = {"tiny": {"image_size": (64, 48), "head_dim": 8}, "sd15": {"image_size": (512, 384), "head_dim": 64}}


def _components(size: str):
    from atelier.diffusion.components import build_sd15_components, build_tiny_components

    return build_tiny_components() if size == "tiny" else build_sd15_components(seed=0)


VARIANTS = {  # row -> (garment_input, fusion, what the table calls it)
    "noisy": ("noisy", "zero-cross-attention", "encoder per step (StableVITON)"),
    "garment": ("garment", "zero-cross-attention", "encoder once per image"),
    "reference": ("garment", "reference-attention", "garment network once/image"),
}


def _task(size: str, variant: str, root: Path, device: str, batch: int):
    from atelier.config import ModelConfig, TrainConfig
    from atelier.methods.tryon.network import TryOnNetConfig
    from atelier.methods.tryon.train import TryOnConfig, TryOnDataConfig, TryOnTask

    spec = SIZES[size]
    garment_input, fusion, _ = VARIANTS[variant]
    cfg = TryOnConfig(model=ModelConfig("tiny"), net=TryOnNetConfig(garment_input=garment_input, attention_head_dim=spec["head_dim"],
                                                                      fusion=fusion),
                      data=TryOnDataConfig(root=str(root), image_size=spec["image_size"], cache=True),
                      train=TrainConfig(batch_size=batch, mixed_precision="no" if size == "tiny" else "bf16"))
    return TryOnTask(cfg, components=_components(size), device=device), cfg


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_training(task, cfg, device: str, steps: int) -> float:
    """Median seconds of one optimizer step (loss, backward, AdamW) after one warm-up step."""
    optimizer = torch.optim.AdamW(task.trainable_parameters(), lr=1e-4)
    dtype = torch.bfloat16 if cfg.train.mixed_precision == "bf16" else None
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
        _sync(device)
        times.append(time.perf_counter() - started)
    return sorted(times[1:])[len(times[1:]) // 2]


def time_sampling(task, device: str, batch: int, steps: int, repeats: int) -> float:
    """Best seconds per image of `generate` (DDIM, `steps` steps) at a batch of `batch` pairs."""
    from atelier.methods.tryon.data import stack
    from atelier.methods.tryon.sample import generate

    items = [task.examples[i % len(task.examples)] for i in range(batch)]
    tensors = stack(items)
    task.net.eval()
    dtype = torch.bfloat16 if device.startswith("cuda") else None
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            generate(task.model, tensors["agnostic"], tensors["mask"], tensors["densepose"], tensors["control"],
                     steps=steps, show_progress=False)
        _sync(device)
        best = min(best, (time.perf_counter() - started) / batch)
    task.net.train()
    return best


def measure(size: str, device: str, args: argparse.Namespace, root: Path) -> dict:
    result = {"device": device, "image_size": list(SIZES[size]["image_size"]), "sample_steps": args.steps,
              "batch": args.batch}
    for variant in VARIANTS:
        task, cfg = _task(size, variant, root, device, args.batch)
        result[variant] = {"train_s_per_step": round(time_training(task, cfg, device, args.train_steps), 4),
                                 "sample_s_per_image": round(time_sampling(task, device, args.batch, args.steps, args.repeats), 4)}
        del task
    result["sample_ratio_per_step_over_once"] = round(result["noisy"]["sample_s_per_image"] / result["garment"]["sample_s_per_image"], 2)
    if device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(0)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["tiny", "sd15"])
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    parser.add_argument("--batch", type=int, default=4, help="pairs per training step and per sampling batch (default 4)")
    parser.add_argument("--train-steps", type=int, default=5, help="timed training steps (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="sampling repeats, best kept (default 3)")
    parser.add_argument("--device", help="device for every size (default: CPU for tiny, CUDA for sd15)")
    args = parser.parse_args(argv)
    from atelier.data.synth import write_tryon
    from atelier.utils.io import write_json

    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                           "threads": torch.get_num_threads()},
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "sizes": {}}
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            device = args.device or ("cpu" if size == "tiny" else "cuda")
            if device.startswith("cuda") and not torch.cuda.is_available():
                print(f"{size}: skipped (no CUDA device)")
                continue
            width = SIZES[size]["image_size"][1]
            root = Path(folder) / size
            write_tryon(root, identities=12, size=(width, SIZES[size]["image_size"][0]), seed=0, test_fraction=0.3)
            results["sizes"][size] = measure(size, device, args, root)
    write_json(RESULTS, results)
    print(f"{'size':6} {'garment path':30} {'train s/step':>13} {'sample s/image':>15}")
    for size, row in results["sizes"].items():
        for variant, (_, _, label) in VARIANTS.items():
            print(f"{size:6} {label:30} {row[variant]['train_s_per_step']:13.4f} {row[variant]['sample_s_per_image']:15.4f}")
        print(f"{size:6} per-step / once-per-image sampling time: {row['sample_ratio_per_step_over_once']:.2f}x")
    print(json.dumps({"written": str(RESULTS)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
