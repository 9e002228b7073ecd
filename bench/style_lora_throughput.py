"""Style-LoRA training throughput (images/s): atelier's loop against a plain loop written like diffusers' LoRA example.

Reference: what diffusers' `train_text_to_image_lora.py` does each step: read the batch's images (its imagefolder
dataset decodes each image when accessed), transforms (resize, centre crop, random flip, to tensor), VAE encode +
`latent_dist.sample()`, tokenize + text encoder, noise, UNet with LoRA, MSE, backward, clip, AdamW step (torch's
default AdamW, as the example builds it). Ours: `atelier.training.loop.train` on a `StyleLoraTask` with the default
TrainConfig (latents and caption embeddings computed once and cached, fused AdamW, no per-step host sync), timed end to
end: task construction with its one-off caching, the loop, and its final checkpoint and LoRA file. Both use the same
SD-shaped model with random weights (speed does not depend on them), the same FashionSynth illustration folder, LoRA
(r 8, alpha 16 on to_q/k/v/out.0), batch size and number of steps, in the same process; runs alternate and the best
of `--repeats` is kept for each. Sizes: `tiny` (atelier's tiny model, 64x48 px, CPU) and `sd15` (the SD 1.5
UNet/VAE/CLIP architecture at 512x512 px, CUDA). `--compile` also times ours with `train.compile: true`: the
one-time compilation is reported apart, and images/s both with and without it.

    python bench/style_lora_throughput.py [--steps 200] [--batch-size 8] [--size tiny] [--repeats 2] [--compile]

Writes bench/results/style_lora_throughput.json (machine, versions, date, settings, images/s, ratio).
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
from typing import Literal

import torch

if __package__ in (None, ""):  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_RATIO = 1.5
RESULTS = Path(__file__).resolve().parent / "results" / "style_lora_throughput.json"
TINY_RESOLUTION = (64, 48)  # the demo's (height, width)
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
CAPTION_PREFIX = "an illustration, "
Size = Literal["tiny", "sd15"]

def build_components(size: Size):
    """SD components with random weights: atelier's tiny model, or SD 1.5's architecture with the offline tokenizer."""
    from atelier.diffusion.components import build_sd15_components, build_tiny_components

    return build_tiny_components() if size == "tiny" else build_sd15_components(seed=0)


def style_config(root: Path, steps: int, batch_size: int, resolution_hw: tuple[int, int], compile_unet: bool = False):
    """Ours: the style-lora task with the default TrainConfig (no log or checkpoint before the end)."""
    from atelier.config import ModelConfig, TrainConfig
    from atelier.methods.style.train import StyleLoraConfig
    from atelier.training.tasks.text2img import CaptionedDataConfig

    return StyleLoraConfig(
        model=ModelConfig(base="tiny"),
        data=CaptionedDataConfig(root=str(root), caption_prefix=CAPTION_PREFIX, resolution=tuple(resolution_hw),
                                 crop="center", flip=True, caption_dropout=0.0),
        train=TrainConfig(max_steps=steps, batch_size=batch_size, lr=1e-4, checkpoint_every=10**9, log_every=10**9,
                          compile=compile_unet),
    )


class Clock:
    """Wall and CPU (this process, all threads) seconds of a block; CUDA work is waited for at both ends. On a loaded
    machine CPU seconds are the steadier measure; both sides use the same threads, so their ratio stays fair."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.wall, self.cpu = device, 0.0, 0.0

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> "Clock":
        self._synchronize()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self._synchronize()
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_ours(root: Path, steps: int, batch_size: int, resolution_hw: tuple[int, int], size: Size, device: torch.device,
             compile_unet: bool = False):
    """(Clock, TrainResult) of atelier's style-lora training, caching included."""
    from atelier.methods.style.train import StyleLoraTask
    from atelier.training.loop import train

    cfg = style_config(root, steps, batch_size, resolution_hw, compile_unet)
    components = build_components(size)
    with tempfile.TemporaryDirectory() as run_dir:
        with Clock(device) as clock:
            with Clock(device) as setup:  # task construction: the one-off caching of latents and caption embeddings
                task = StyleLoraTask(cfg, components=components, device=device)
            result = train(task, cfg.train, run_dir)
        result.setup_seconds = setup.wall
        return clock, result


def run_reference(root: Path, steps: int, batch_size: int, resolution_hw: tuple[int, int], size: Size,
                  device: torch.device) -> Clock:
    """Time of the same training written like diffusers' example: VAE and text encoder on every step."""
    import numpy as np
    from peft import LoraConfig

    from atelier.data.formats.captioned import read_captioned_folder
    from atelier.data.transforms import open_rgb, resize_image

    components = build_components(size).to(device)
    unet, vae, text_encoder, tokenizer, scheduler = (components.unet, components.vae, components.text_encoder,
                                                     components.tokenizer, components.scheduler)
    unet.requires_grad_(False)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=8, lora_alpha=16, init_lora_weights="gaussian", target_modules=TARGETS))
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    items = read_captioned_folder(root, caption_prefix=CAPTION_PREFIX)
    rng = np.random.default_rng(0)
    with Clock(device) as clock:
        for _ in range(steps):
            batch = rng.integers(0, len(items), batch_size)
            pixels = []
            for index in batch:
                image = resize_image(open_rgb(items[index].path), tuple(resolution_hw), "center")
                tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
                pixels.append(tensor.flip(-1) if rng.random() < 0.5 else tensor)
            latents = vae.encode(torch.stack(pixels).to(device)).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),), device=device)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            input_ids = tokenizer([items[i].caption for i in batch], padding="max_length", truncation=True,
                                  max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
            encoder_hidden_states = text_encoder(input_ids.to(device), return_dict=False)[0]
            prediction = unet(noisy, timesteps, encoder_hidden_states, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad()
    return clock


def _peak_bytes(device: torch.device, measure) -> tuple[object, int | None]:
    """(measure(), peak CUDA memory it allocated; None off CUDA)."""
    if device.type != "cuda":
        return measure(), None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    value = measure()
    return value, torch.cuda.max_memory_allocated(device)


def run(steps: int, batch_size: int, resolution_hw: tuple[int, int], size: Size = "tiny", *, device: str | None = None,
        repeats: int = 1, identities: int = 12, poses: int = 4, compile_unet: bool = False) -> dict:
    """Time ours and the reference (alternating, best of `repeats`) on one synthesized folder; return the result dict.

    `device`: default CPU for `tiny`, CUDA for `sd15`. `compile_unet` adds a run of ours with train.compile on.
    Besides the end-to-end ratio (ours' one-off caching included), the steady ratio compares seconds per step once
    ours has cached: the end-to-end ratio approaches it as a run sees each image more often.
    """
    from atelier.data.synth import synthesize
    from bench._flops import style_lora_flop_bound

    if size not in ("tiny", "sd15"):
        raise ValueError(f"size {size!r}: expected 'tiny' or 'sd15'")
    device = torch.device(device or ("cuda" if size == "sd15" else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"size {size!r} runs on CUDA and none is available here; pass device='cpu' to force it")
    os.environ.setdefault("ATELIER_NO_PROGRESS", "1")
    resolution_hw = tuple(resolution_hw)
    clocks: dict[str, list[Clock]] = {"ours": [], "reference": []}
    setups: list[float] = []
    peaks: dict[str, list[int | None]] = {"ours": [], "reference": []}
    compiled = None
    with tempfile.TemporaryDirectory(prefix="style-lora-bench-") as folder:
        summary = synthesize(Path(folder) / "data", identities=identities, poses_per_identity=poses, size=(176, 256))
        root = summary.style / "illustration"
        run_reference(root, 2, batch_size, resolution_hw, size, device)  # warm-up: first-call costs of torch kernels
        for _ in range(repeats):
            (clock, trained), peak = _peak_bytes(device, lambda: run_ours(root, steps, batch_size, resolution_hw, size, device))
            clocks["ours"].append(clock)
            setups.append(trained.setup_seconds)
            peaks["ours"].append(peak)
            clock, peak = _peak_bytes(device, lambda: run_reference(root, steps, batch_size, resolution_hw, size, device))
            clocks["reference"].append(clock)
            peaks["reference"].append(peak)
        if compile_unet:
            compiled = _compiled_numbers(*run_ours(root, steps, batch_size, resolution_hw, size, device, compile_unet=True),
                                         steps, batch_size)
        flops = style_lora_flop_bound(build_components(size), resolution_hw)
    images = steps * batch_size
    wall = {name: [clock.wall for clock in runs] for name, runs in clocks.items()}
    cpu = {name: [clock.cpu for clock in runs] for name, runs in clocks.items()}
    ours_rate, reference_rate = images / min(wall["ours"]), images / min(wall["reference"])
    ratio = ours_rate / reference_rate
    result = {
        "benchmark": "style_lora_throughput",
        "ratio": round(ratio, 3),
        "ours_images_per_second": round(ours_rate, 2),
        "reference_images_per_second": round(reference_rate, 2),
        "meets_target": ratio >= TARGET_RATIO,
        "target_ratio": TARGET_RATIO,
        "ratio_cpu_seconds": round(min(cpu["reference"]) / min(cpu["ours"]), 3),  # steadier on a loaded machine
        "ours_caching_seconds": round(min(setups), 3),
        "ratio_steady": round(min(wall["reference"]) / min(w - setup for w, setup in zip(wall["ours"], setups)), 3),
        "flops_per_image": flops,  # steady_ratio_bound: what skipping the frozen encoders can gain at most
        "seconds": {name: [round(value, 3) for value in values] for name, values in wall.items()},
        "cpu_seconds": {name: [round(value, 3) for value in values] for name, values in cpu.items()},
        "settings": {"size": size, "device": str(device), "resolution_hw": list(resolution_hw), "steps": steps,
                     "batch_size": batch_size, "images_in_folder": identities * poses, "repeats": repeats,
                     "lora": {"rank": 8, "alpha": 16, "targets": TARGETS}},
    }
    if device.type == "cuda":
        result["peak_memory_bytes"] = {name: max(values) for name, values in peaks.items()}
    if compiled is not None:
        compiled["ratio_steady"] = round(compiled["images_per_second_steady"] / reference_rate, 3)
        compiled["ratio_including_compile"] = round(compiled["images_per_second_including_compile"] / reference_rate, 3)
        result["compiled"] = compiled
    return result


def _compiled_numbers(clock: Clock, result, steps: int, batch_size: int) -> dict:
    """Images/s of a compiled run with and without its one-time compilation (wall seconds: the C++ compiler runs in
    other processes); compile seconds = the first step's time minus a steady step's."""
    steady_step = (result.seconds - result.first_step_seconds) / max(1, steps - 1)
    compile_seconds = max(0.0, result.first_step_seconds - steady_step)
    return {"compile_seconds": round(compile_seconds, 2), "seconds_total": round(clock.wall, 3),
            "images_per_second_including_compile": round(steps * batch_size / clock.wall, 2),
            "images_per_second_steady": round(batch_size / steady_step, 2)}


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run (default 200)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    parser.add_argument("--size", choices=["tiny", "sd15"], default="tiny",
                        help="tiny (64x48 px, CPU) or sd15 (SD 1.5 architecture, 512x512 px, CUDA); default tiny")
    parser.add_argument("--identities", type=int, default=12, help="FashionSynth identities in the folder (default 12)")
    parser.add_argument("--poses", type=int, default=4, help="photos per identity in the folder, 2 or more (default 4)")
    parser.add_argument("--device", default=None, help="torch device (default: cpu for tiny, cuda for sd15)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each, alternating; the best counts (default 2)")
    parser.add_argument("--compile", action="store_true", help="also time ours with train.compile (minutes on a CPU)")
    args = parser.parse_args(argv)

    import diffusers
    import peft

    from atelier import __version__
    from atelier.utils.io import write_json

    resolution = TINY_RESOLUTION if args.size == "tiny" else (512, 512)
    result = run(args.steps, args.batch_size, resolution, args.size, device=args.device, repeats=args.repeats,
                 identities=args.identities, poses=args.poses, compile_unet=args.compile)
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(f"style-LoRA training, {args.size} SD model at {resolution[1]}x{resolution[0]}, {args.steps} steps x batch "
          f"{args.batch_size}: ours {result['ours_images_per_second']:.1f} images/s (caching included), reference "
          f"(diffusers-example loop) {result['reference_images_per_second']:.1f} images/s; ratio {result['ratio']:.2f}x "
          f"{verdict} the {TARGET_RATIO}x target (by CPU seconds: {result['ratio_cpu_seconds']:.2f}x); ours cached for "
          f"{result['ours_caching_seconds']:.1f} s, after which it ran {result['ratio_steady']:.2f}x the reference's speed "
          f"(FLOP bound of what caching can gain: {result['flops_per_image']['steady_ratio_bound']:.2f}x)")
    if "compiled" in result:
        compiled = result["compiled"]
        print(f"with train.compile: {compiled['compile_seconds']:.0f} s to compile once, then "
              f"{compiled['images_per_second_steady']:.1f} images/s ({compiled['ratio_steady']:.2f}x); "
              f"{compiled['images_per_second_including_compile']:.1f} images/s over {args.steps} steps with the "
              f"compilation ({compiled['ratio_including_compile']:.2f}x)")
    result.update({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": {"python": sys.version.split()[0], "atelier": __version__, "torch": torch.__version__,
                     "diffusers": diffusers.__version__, "peft": peft.__version__},
    })
    device = result["settings"]["device"]
    path = RESULTS if (args.size, device) == ("tiny", "cpu") else RESULTS.with_name(f"{RESULTS.stem}-{args.size}-{device}.json")
    write_json(path, result)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
