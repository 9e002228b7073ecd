"""Style-LoRA training throughput (images/s): atelier's loop against a plain loop written like diffusers' LoRA example.

Reference: what diffusers' `train_text_to_image_lora.py` does each step: read the batch's images (its imagefolder
dataset decodes each image when accessed), transforms (resize, centre crop, random flip, to tensor), VAE encode +
`latent_dist.sample()`, tokenize + text encoder, noise, UNet with LoRA, MSE, backward, clip, AdamW step. Ours:
`atelier.training.loop.train` on a `StyleLoraTask` (latents and caption embeddings computed once and cached), timed
end to end: task construction with its one-off caching, the loop, and its final checkpoint and LoRA file. Both use
the same tiny SD-shaped model (random weights: speed does not depend on them), the same FashionSynth illustration
folder, LoRA (r 8, alpha 16 on to_q/k/v/out.0), batch size and number of steps, in the same process; runs alternate
and the best of `--repeats` is kept for each.

    python bench/style_lora_throughput.py [--steps 200] [--batch-size 8] [--identities 12] [--repeats 2]

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

import torch

TARGET_RATIO = 1.5
RESULTS = Path(__file__).resolve().parent / "results" / "style_lora_throughput.json"
RESOLUTION = (64, 48)  # the demo's (height, width)
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def style_config(root: Path, steps: int, batch_size: int):
    from atelier.config import ModelConfig, TrainConfig
    from atelier.training.tasks.style_lora import StyleLoraConfig
    from atelier.training.tasks.text2img import CaptionedDataConfig

    return StyleLoraConfig(
        model=ModelConfig(base="tiny"),
        data=CaptionedDataConfig(root=str(root), caption_prefix="an illustration, ", resolution=RESOLUTION, crop="center",
                                 flip=True, caption_dropout=0.0),
        train=TrainConfig(max_steps=steps, batch_size=batch_size, lr=1e-4, checkpoint_every=10**9, log_every=10**9),
    )


def run_ours(root: Path, steps: int, batch_size: int) -> float:
    """Seconds for atelier's style-lora training, caching included."""
    from atelier.models.base import build_tiny_components
    from atelier.training.loop import train
    from atelier.training.tasks.style_lora import StyleLoraTask

    cfg = style_config(root, steps, batch_size)
    components = build_tiny_components()
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        train(StyleLoraTask(cfg, components=components, device="cpu"), cfg.train, run_dir)
        return time.perf_counter() - started


def run_reference(root: Path, steps: int, batch_size: int) -> float:
    """Seconds for the same training written like diffusers' example: VAE and text encoder on every step."""
    import numpy as np
    from peft import LoraConfig

    from atelier.data.formats.captioned import read_captioned_folder
    from atelier.data.transforms import open_rgb, resize_image
    from atelier.models.base import build_tiny_components

    components = build_tiny_components()
    unet, vae, text_encoder, tokenizer, scheduler = (components.unet, components.vae, components.text_encoder,
                                                     components.tokenizer, components.scheduler)
    unet.requires_grad_(False)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=8, lora_alpha=16, init_lora_weights="gaussian", target_modules=TARGETS))
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    items = read_captioned_folder(root, caption_prefix="an illustration, ")
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = rng.integers(0, len(items), batch_size)
        pixels = []
        for index in batch:
            image = resize_image(open_rgb(items[index].path), RESOLUTION, "center")
            tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
            pixels.append(tensor.flip(-1) if rng.random() < 0.5 else tensor)
        latents = vae.encode(torch.stack(pixels)).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),))
        noisy = scheduler.add_noise(latents, noise, timesteps)
        input_ids = tokenizer([items[i].caption for i in batch], padding="max_length", truncation=True,
                              max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
        encoder_hidden_states = text_encoder(input_ids, return_dict=False)[0]
        prediction = unet(noisy, timesteps, encoder_hidden_states, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - started


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run (default 200)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    parser.add_argument("--identities", type=int, default=12, help="FashionSynth identities (x4 poses) in the folder (default 12)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each, alternating; the best counts (default 2)")
    args = parser.parse_args(argv)

    import diffusers
    import peft

    from atelier import __version__
    from atelier.data.synth import synthesize
    from atelier.utils.io import write_json

    os.environ.setdefault("ATELIER_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory(prefix="style-lora-bench-") as folder:
        summary = synthesize(Path(folder) / "data", identities=args.identities, poses_per_identity=4, size=(176, 256))
        root = summary.style / "illustration"
        run_reference(root, 2, args.batch_size)  # warm-up: first-call costs of torch kernels, not of either loop
        ours, reference = [], []
        for _ in range(args.repeats):
            ours.append(run_ours(root, args.steps, args.batch_size))
            reference.append(run_reference(root, args.steps, args.batch_size))
    images = args.steps * args.batch_size
    ours_rate, reference_rate = images / min(ours), images / min(reference)
    ratio = ours_rate / reference_rate
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"style-LoRA training, tiny SD model at {RESOLUTION[1]}x{RESOLUTION[0]}, {args.steps} steps x batch {args.batch_size}: "
          f"ours {ours_rate:.1f} images/s (caching included), reference (diffusers-example loop) {reference_rate:.1f} images/s; "
          f"ratio {ratio:.2f}x {verdict} the {TARGET_RATIO}x target")
    write_json(RESULTS, {
        "benchmark": "style_lora_throughput",
        "ratio": round(ratio, 3),
        "ours_images_per_second": round(ours_rate, 2),
        "reference_images_per_second": round(reference_rate, 2),
        "meets_target": ratio >= TARGET_RATIO,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": {"python": sys.version.split()[0], "atelier": __version__, "torch": torch.__version__,
                     "diffusers": diffusers.__version__, "peft": peft.__version__},
        "settings": {"model": "tiny (UNet ~1M params, VAE x4)", "resolution_hw": list(RESOLUTION), "steps": args.steps,
                     "batch_size": args.batch_size, "images_in_folder": args.identities * 4,
                     "repeats": args.repeats, "lora": {"rank": 8, "alpha": 16, "targets": TARGETS}},
        "seconds": {"ours": [round(s, 3) for s in ours], "reference": [round(s, 3) for s in reference]},
        "target_ratio": TARGET_RATIO,
    })  # fmt: skip
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
