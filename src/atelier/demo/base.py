"""Demo task `base`: train the tiny base model (VAE, then text-to-image UNet) on FashionSynth photos, and measure it.

Measured learning, each beside a trivial baseline, on held-out identities:
- denoising loss (fixed noise and timesteps) of the trained UNet vs the untrained one vs predicting zero noise;
- garment-colour error: mean RGB inside the true garment mask, generated-from-caption vs ground truth, against the
  same model with an empty prompt (caption-blind) and against the mean training photo.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atelier.config import ModelConfig, TrainConfig, to_dict
from atelier.demo.context import DemoContext, cached, ensure_data
from atelier.demo.report import Section, Table
from atelier.models.base import SDComponents, build_tiny_components, load_components
from atelier.models.encode import encode_images, encode_prompts
from atelier.training.loop import train
from atelier.training.tasks.autoencoder import AutoencoderConfig, AutoencoderTask, ImageFolderConfig
from atelier.training.tasks.diffusion import DiffusionLossConfig
from atelier.training.tasks.text2img import CaptionedDataConfig, SampleConfig, Text2ImgConfig, Text2ImgTask
from atelier.utils.images import make_grid
from atelier.utils.io import save_image

RESOLUTION = (64, 48)  # (H, W): FashionSynth's 176x256 photos at 1/4 scale, latents 16x12


def base_configs(ctx: DemoContext, data: Path) -> tuple[AutoencoderConfig, Text2ImgConfig]:
    """The two training configs of the tiny base (VAE on photos + illustrations, then UNet on photo captions)."""
    style = data / "style"
    vae = AutoencoderConfig(
        model=ModelConfig(base="tiny"),
        data=ImageFolderConfig(roots=[str(style / "photo"), str(style / "illustration")], resolution=RESOLUTION),
        train=TrainConfig(max_steps=ctx.steps(300, 20), batch_size=16, lr=2e-3, lr_schedule="cosine", warmup_steps=10,
                          weight_decay=0.0, checkpoint_every=100, log_every=5),
    )
    unet = Text2ImgConfig(
        data=CaptionedDataConfig(root=str(style / "photo"), list_file=str(style / "train.lst"), resolution=RESOLUTION, flip=True),
        train=TrainConfig(max_steps=ctx.steps(700, 20), batch_size=16, lr=1e-3, lr_schedule="cosine", warmup_steps=20,
                          weight_decay=0.0, checkpoint_every=200, log_every=5),
        loss=DiffusionLossConfig(),
        sample=SampleConfig(prompts=[], steps=20, guidance_scale=3.0),
    )
    return vae, unet


def ensure_base(ctx: DemoContext) -> Path:
    """The trained tiny base model (a diffusers directory), cached under OUT/base."""
    data = ensure_data(ctx)
    vae_cfg, unet_cfg = base_configs(ctx, data)

    def build(folder: Path) -> None:
        vae_task = AutoencoderTask(vae_cfg, components=build_tiny_components(seed=0))
        ctx.timed("train VAE", lambda: train(vae_task, vae_cfg.train, folder / "vae", config=vae_cfg))
        unet_cfg.model.base = str(folder / "vae" / "final")
        unet_task = Text2ImgTask(unet_cfg)
        ctx.timed("train UNet", lambda: train(unet_task, unet_cfg.train, folder / "unet", config=unet_cfg))

    key = {"vae": to_dict(vae_cfg), "unet": to_dict(unet_cfg), "data": str(data)}
    cached(ctx.out / "base", key, build)
    return ctx.out / "base" / "unet" / "final"


def test_items(data: Path) -> list[dict]:
    """Held-out attribute rows (labels/attributes.jsonl entries of the test split)."""
    rows = [json.loads(line) for line in (data / "labels" / "attributes.jsonl").read_text().splitlines() if line.strip()]
    return [row for row in rows if row["split"] == "test"]


@torch.no_grad()
def heldout_denoising_loss(components: SDComponents, images: torch.Tensor, captions: list[str], predict_zero: bool = False) -> float:
    """Mean epsilon-MSE at 10 fixed timesteps with fixed noise (comparable across models); predict_zero: the trivial baseline."""
    unet = components.unet
    latents, _ = encode_images(components.vae, images)
    text = encode_prompts(components.tokenizer, components.text_encoder, captions)
    generator = torch.Generator().manual_seed(1234)
    losses = []
    for t in torch.linspace(50, 950, 10).long():
        noise = torch.randn(latents.shape, generator=generator)
        noisy = components.scheduler.add_noise(latents, noise, t.expand(len(latents)))
        prediction = torch.zeros_like(noise) if predict_zero else unet(noisy, t, text).sample
        losses.append(float(((prediction - noise) ** 2).mean()))
    return float(np.mean(losses))


def garment_colour_error(images: list[Image.Image], truths: list[Image.Image], masks: list[np.ndarray]) -> float:
    """Mean over images of the RGB distance (0-255 scale) between mean colours inside the true garment mask."""
    errors = []
    for image, truth, mask in zip(images, truths, masks):
        size = image.size
        keep = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST)) > 127
        if not keep.any():
            continue
        generated = np.asarray(image.convert("RGB"), dtype=np.float64)[keep].mean(0)
        expected = np.asarray(truth.convert("RGB").resize(size, Image.BICUBIC), dtype=np.float64)[keep].mean(0)
        errors.append(float(np.linalg.norm(generated - expected)))
    return float(np.mean(errors))


def run_base(ctx: DemoContext) -> Section:
    """Train (or reuse) the tiny base, then score it on held-out identities against trivial baselines."""
    import yaml

    from atelier.data.transforms import load_image_tensor, open_rgb
    from atelier.pipelines.text2img import generate
    from atelier.utils.images import tensor_to_pil

    base_dir = ensure_base(ctx)
    data = ctx.data
    rows = test_items(data)[: 8 if ctx.fast else 40]
    photos = [data / "style" / "photo" / row["name"] for row in rows]
    captions = [(data / "style" / "photo" / row["name"]).with_suffix(".txt").read_text().strip() for row in rows]
    masks = [np.asarray(Image.open(data / "labels" / "garment_mask" / (Path(row["name"]).stem + ".png"))) for row in rows]
    images = torch.stack([load_image_tensor(p, RESOLUTION) for p in photos])
    truths = [open_rgb(p) for p in photos]

    trained = load_components(base_dir)
    untrained = load_components(base_dir)
    untrained.unet = build_tiny_components(seed=0).unet  # same VAE/text encoder, UNet at initialisation
    loss_rows = [
        {"model": "trained UNet", "held-out denoising MSE (lower is better)": heldout_denoising_loss(trained, images, captions)},
        {"model": "untrained UNet (initial weights)", "held-out denoising MSE (lower is better)": heldout_denoising_loss(untrained, images, captions)},
        {"model": "baseline: predict zero noise", "held-out denoising MSE (lower is better)": heldout_denoising_loss(trained, images, captions, predict_zero=True)},
    ]

    def sample(components: SDComponents, prompts: list[str]) -> list[Image.Image]:
        return generate(components, prompts, size_hw=RESOLUTION, steps=20, guidance_scale=3.0, seed=7, show_progress=False).images

    with_caption = ctx.timed("sample held-out captions", lambda: sample(trained, captions))
    blind = sample(trained, [""] * len(captions))
    train_photos = sorted((data / "style" / "photo").glob("*.jpg"))
    mean_photo = tensor_to_pil(torch.stack([load_image_tensor(p, RESOLUTION) for p in train_photos[:200]]).mean(0))
    colour_rows = [
        {"images": "trained model, prompted with the caption", "garment colour error (RGB distance, lower is better)": garment_colour_error(with_caption, truths, masks)},
        {"images": "trained model, empty prompt (caption-blind)", "garment colour error (RGB distance, lower is better)": garment_colour_error(blind, truths, masks)},
        {"images": "baseline: mean training photo", "garment colour error (RGB distance, lower is better)": garment_colour_error([mean_photo] * len(rows), truths, masks)},
    ]
    grid_path = ctx.out / "base" / "heldout_grid.png"
    small = [t.resize((RESOLUTION[1], RESOLUTION[0]), Image.BICUBIC) for t in truths[:10]]
    save_image(make_grid([small, with_caption[:10], blind[:10]], cell=(96, 128)), grid_path)

    trained_loss, untrained_loss, zero_loss = (r["held-out denoising MSE (lower is better)"] for r in loss_rows)
    caption_err, blind_err, mean_err = (r["garment colour error (RGB distance, lower is better)"] for r in colour_rows)
    checks = {
        "trained UNet's held-out denoising loss is below the untrained UNet's": trained_loss < untrained_loss,
        "trained UNet's held-out denoising loss is below predicting zero noise": trained_loss < zero_loss,
        "captions steer the garment colour: error below the caption-blind samples": caption_err < blind_err,
        "generated garment colours closer to the truth than the mean training photo": caption_err < mean_err,
    }
    vae_cfg, unet_cfg = base_configs(ctx, data)
    summary = (f"The tiny base model ({sum(p.numel() for p in trained.unet.parameters()) / 1e6:.2f}M-parameter UNet, "
               f"VAE with 4x downsampling, {RESOLUTION[1]}x{RESOLUTION[0]} px) trained on FashionSynth training photos; "
               f"scored on {len(rows)} photos of held-out identities. Held-out denoising MSE {trained_loss:.4f} vs "
               f"{untrained_loss:.4f} untrained and {zero_loss:.4f} for predicting zero; garment-colour error "
               f"{caption_err:.1f} with captions vs {blind_err:.1f} caption-blind and {mean_err:.1f} for the mean photo.")
    return Section(
        task="base",
        title="Tiny base model: text-to-image on FashionSynth",
        summary=summary,
        tables=[Table("held-out denoising loss (10 fixed timesteps, fixed noise)", loss_rows),
                Table("garment colour fidelity on held-out captions", colour_rows)],
        images=[("held-out identities: ground-truth photo / generated from its caption / generated with an empty prompt", grid_path),
                ("VAE training loss", ctx.out / "base" / "vae" / "loss.png"),
                ("UNet training loss", ctx.out / "base" / "unet" / "loss.png")],
        config=yaml.safe_dump({"vae": to_dict(vae_cfg), "unet": to_dict(unet_cfg)}, sort_keys=False),
        checks=checks,
    )
