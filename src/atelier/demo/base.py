"""Demo task `base`: train the tiny base model (VAE, then text-to-image UNet) on FashionSynth photos, and measure it.

The VAE learns from its own FashionSynth draw, photos and illustrations of 256 other people than the demo data's (so
every held-out identity stays unseen by every model) in 2 poses each: a codec generalises with the number of people it
has seen (adding 96 identities to the demo's 38 training ones gave +0.6 dB PSNR on held-out identities).

Measured learning, each beside a trivial baseline, on held-out identities:
- VAE round trip (PSNR) of photos and illustrations vs a bicubic thumbnail of the latent grid's size (16x12 px);
- denoising loss (fixed noise and timesteps) of the trained UNet vs the untrained one vs predicting zero noise;
- caption colour hit rate: share of samples whose dominant palette colour is a garment colour the caption names,
  against the same model with an empty prompt (caption-blind, same seeds) and against the captioned samples scored on
  shuffled captions (what chance gives these very images).
Every check is a paired test over the held-out images (demo.results.paired_beats): the demo data holds 40 held-out
photos (10 identities x 4 poses), all of them scored; each caption is sampled SAMPLES_PER_CAPTION times (seeds
apart) and its hit share is its one number, so the test's unit stays the caption and not its correlated samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atelier.config import ModelConfig, TrainConfig, to_dict
from atelier.demo.context import DEMO_DATA, FAST_DATA, DemoContext, cached, ensure_data, synthesized
from atelier.demo.heldout import HeldOut, heldout_attributes
from atelier.demo.results import Check, Figure, StageResult, Table, all_of, paired_beats
from atelier.diffusion.components import SDComponents, build_tiny_components, embedded_base_dir, load_components
from atelier.diffusion.encode import encode_images, encode_prompts
from atelier.metrics.per_image import colour_hits, psnr_per_image
from atelier.training.losses import DiffusionLossConfig
from atelier.training.tasks.autoencoder import (
    AutoencoderConfig,
    AutoencoderInitConfig,
    AutoencoderLossConfig,
    AutoencoderTask,
    ImageFolderConfig,
)
from atelier.training.tasks.text2img import CaptionedDataConfig, SampleConfig, Text2ImgConfig, Text2ImgTask

VAE_DATA = {**DEMO_DATA, "identities": 256, "poses_per_identity": 2, "seed": 1}  # the VAE's own draw: other people
VAE_PSNR, THUMBNAIL_PSNR = "VAE round trip PSNR dB", "baseline: 16x12 thumbnail PSNR dB"
LOSS = "held-out denoising MSE (lower is better)"
HIT = "caption colour hit rate (higher is better)"
SAMPLES_PER_CAPTION = 3  # samples per held-out caption (seeds apart), with and without the caption
Scores = dict[str, np.ndarray]  # a number's name -> its value per held-out image (or caption), in one order


def ensure_vae_data(ctx: DemoContext) -> Path:
    """The VAE's FashionSynth draw (cached under OUT/vae-data); all of it is training data."""
    return synthesized(ctx, "vae-data", VAE_DATA, {**FAST_DATA, "identities": 4})


def base_configs(ctx: DemoContext, data: Path, vae_data: Path) -> tuple[AutoencoderConfig, Text2ImgConfig]:
    """The two training configs of the tiny base (VAE on its own photos + illustrations, then UNet on photo captions).

    The VAE's recipe, measured on held-out identities: many small steps (batch 4) beat few large ones in equal time
    (+3 dB PSNR), MSE is what PSNR scores, and it starts from identity blocks with a near-deterministic posterior.
    """
    style = data / "style"
    vae = AutoencoderConfig(
        model=ModelConfig(base="tiny"),
        data=ImageFolderConfig(roots=[str(vae_data / "style" / "photo"), str(vae_data / "style" / "illustration")],
                               resolution=ctx.resolution),
        train=TrainConfig(max_steps=ctx.pick(2000, 2), batch_size=ctx.pick(4, 2), lr=2e-3, lr_schedule="cosine",
                          warmup_steps=50, weight_decay=0.0, checkpoint_every=500, log_every=20),
        loss=AutoencoderLossConfig(reconstruction="mse"),
        init=AutoencoderInitConfig(zero_residuals=True, posterior_logvar=-8.0),
    )
    unet = Text2ImgConfig(
        data=CaptionedDataConfig(root=str(style / "photo"), list_file=str(style / "train.lst"), resolution=ctx.resolution, flip=True),
        train=TrainConfig(max_steps=ctx.pick(700, 2), batch_size=ctx.pick(16, 2), lr=1e-3, lr_schedule="cosine",
                          warmup_steps=20, weight_decay=0.0, checkpoint_every=200, log_every=5),
        loss=DiffusionLossConfig(),
        sample=SampleConfig(prompts=[], steps=20, guidance_scale=3.0),
        train_text_encoder=True,  # the tiny text encoder starts random: captions only steer colour once it trains
    )
    return vae, unet


def ensure_base(ctx: DemoContext) -> Path:
    """The base model every stage starts from (a diffusers directory): the embedded FashionSynth base, its files checked
    against their sha256; with --from-scratch the tiny base trained here, cached under OUT/base."""
    if not ctx.from_scratch:
        from atelier.diffusion.release import verify_release

        verify_release(embedded_base_dir())
        return embedded_base_dir()
    data = ensure_data(ctx)
    vae_cfg, unet_cfg = base_configs(ctx, data, ensure_vae_data(ctx))

    def build(folder: Path) -> None:
        vae_task = lambda: AutoencoderTask(vae_cfg, components=build_tiny_components(seed=0))  # noqa: E731
        ctx.train("train VAE", vae_task, vae_cfg, folder / "vae")
        unet_cfg.model.base = str(folder / "vae" / "final")
        ctx.train("train UNet", lambda: Text2ImgTask(unet_cfg), unet_cfg, folder / "unet")

    key = {"vae": to_dict(vae_cfg), "unet": to_dict(unet_cfg), "data": str(data), "vae_data": VAE_DATA}
    cached(ctx.out / "base", key, build)
    return ctx.out / "base" / "unet" / "final"


@torch.no_grad()
def heldout_denoising_loss(components: SDComponents, images: torch.Tensor, captions: list[str],
                           predict_zero: bool = False) -> np.ndarray:
    """Per-image epsilon-MSE, averaged over 10 fixed timesteps with fixed noise (comparable across models and paired
    image by image); predict_zero: the trivial baseline."""
    unet = components.unet
    latents, _ = encode_images(components.vae, images)
    text = encode_prompts(components.tokenizer, components.text_encoder, captions)
    generator = torch.Generator().manual_seed(1234)
    losses = []
    for t in torch.linspace(50, 950, 10).long():
        noise = torch.randn(latents.shape, generator=generator)
        noisy = components.scheduler.add_noise(latents, noise, t.expand(len(latents)))
        prediction = torch.zeros_like(noise) if predict_zero else unet(noisy, t, text).sample
        losses.append(((prediction - noise) ** 2).mean(dim=(1, 2, 3)).numpy())
    return np.mean(losses, axis=0)


@torch.no_grad()
def round_trip_rows(vae, held: HeldOut) -> tuple[list[dict], Scores]:
    """PSNR (dB) of held-out photos and illustrations through the VAE (posterior mean) and, as the baseline, as
    bicubic thumbnails of the latent grid's size (16x12 px: 576 numbers against the latents' 768) enlarged back: the
    table's rows (means) and the per-image scores (photo_vae, photo_thumb, drawing_vae, drawing_thumb)."""
    from atelier.data.transforms import resize_image
    from atelier.utils.images import tensor_to_pil

    size = held.size_hw
    grid = (size[0] // 4, size[1] // 4)
    rows, scores = [], {}
    for kind, short in (("photo", "photo"), ("illustration", "drawing")):
        truths = held.images(kind)
        decoded = vae.decode(vae.encode(held.tensors(kind)).latent_dist.mean).sample
        thumbnails = [resize_image(thumbnail, size) for thumbnail in held.images(kind, grid)]
        scores[f"{short}_vae"] = psnr_per_image(list(map(tensor_to_pil, decoded)), truths)
        scores[f"{short}_thumb"] = psnr_per_image(thumbnails, truths)
        rows.append({"held-out images": f"{kind}s", VAE_PSNR: float(scores[f"{short}_vae"].mean()),
                     THUMBNAIL_PSNR: float(scores[f"{short}_thumb"].mean())})
    return rows, scores


def loss_rows(trained: SDComponents, base_dir: Path, images: torch.Tensor, captions: list[str],
              architecture: str = "tiny") -> tuple[list[dict], Scores]:
    """Held-out denoising loss of the trained UNet, the same UNet at initialisation and predicting zero noise: the
    table's rows (means) and the per-image losses (trained_loss, untrained_loss, zero_loss)."""
    untrained = load_components(base_dir)
    untrained.unet = build_tiny_components(seed=0, architecture=architecture).unet  # same VAE/text encoder, UNet at init
    scores = {"trained_loss": heldout_denoising_loss(trained, images, captions),
              "untrained_loss": heldout_denoising_loss(untrained, images, captions),
              "zero_loss": heldout_denoising_loss(trained, images, captions, predict_zero=True)}
    labels = ("trained UNet", "untrained UNet (initial weights)", "baseline: predict zero noise")
    return [{"model": label, LOSS: float(values.mean())} for label, values in zip(labels, scores.values())], scores


def colour_rows(with_caption: list[Image.Image], blind: list[Image.Image], truths: list[Image.Image],
                colours: list[set[str]]) -> tuple[list[dict], Scores]:
    """Caption colour hit rates of the captioned samples beside the caption-blind, shuffled and ground-truth ones.

    `colours` has one set per held-out caption; the samples come in rounds (every caption once per round, the
    caption-blind ones with the same seeds). Returns the table's rows and, per caption, the share of its samples
    that hit (caption_hit, blind_hit, shuffled_hit; truth_hit of its one photo).
    """
    rounds = len(with_caption) // len(colours)
    shuffled = colours[1:] + colours[:1]  # each image scored against its neighbour's caption

    def shares(images: list[Image.Image], sets: list[set[str]]) -> np.ndarray:
        return colour_hits(images, sets * (len(images) // len(sets))).reshape(-1, len(sets)).mean(axis=0)

    scores = {"caption_hit": shares(with_caption, colours), "blind_hit": shares(blind, colours),
              "shuffled_hit": shares(with_caption, shuffled), "truth_hit": shares(truths, colours)}
    labels = (f"trained model, prompted with the caption ({rounds} samples each)",
              "baseline: trained model, empty prompt (caption-blind, same seeds)",
              "baseline: the captioned samples scored on shuffled captions", "reference: the ground-truth photos")
    return [{"images": label, HIT: float(values.mean())} for label, values in zip(labels, scores.values())], scores


def headline(vae_scores: Scores, loss_scores: Scores, hit_scores: Scores) -> Scores:
    """The per-image numbers that the checks and the summary quote, by name (the three tables' together)."""
    return vae_scores | loss_scores | hit_scores


def base_checks(n: Scores) -> list[Check]:
    """The stage's claims, each a paired test over the held-out images (captions for the hit rates): each number
    above (or below) its trivial baseline."""
    lower = {"lower_is_better": True}
    return [
        all_of("VAE round trip of held-out photos and illustrations beats thumbnails of the latent grid's size (PSNR)",
               [paired_beats("photos", n["photo_vae"], n["photo_thumb"], unit=" dB", digits=2),
                paired_beats("illustrations", n["drawing_vae"], n["drawing_thumb"], unit=" dB", digits=2)]),
        paired_beats("trained UNet's held-out denoising loss is below the untrained UNet's",
                     n["trained_loss"], n["untrained_loss"], **lower),
        paired_beats("trained UNet's held-out denoising loss is below predicting zero noise",
                     n["trained_loss"], n["zero_loss"], **lower),
        paired_beats("captions steer the garment colour: hit rate above the caption-blind samples (same seeds)",
                     n["caption_hit"], n["blind_hit"], digits=3),
        paired_beats("the colours follow each sample's own caption: hit rate above shuffled captions",
                     n["caption_hit"], n["shuffled_hit"], digits=3),
    ]


def base_summary(unet_parameters: int, count: int, scores: Scores, resolution: tuple[int, int]) -> str:
    """The stage's paragraph: what was trained, on what it was scored, every headline number (means)."""
    n = {name: float(values.mean()) for name, values in scores.items()}
    return (f"The tiny base model ({unet_parameters / 1e6:.2f}M-parameter UNet, "
            f"VAE with 4x downsampling, {resolution[1]}x{resolution[0]} px) trained on FashionSynth training photos; "
            f"scored on {count} photos of held-out identities. The VAE's round trip reaches {n['photo_vae']:.1f} dB PSNR on "
            f"photos and {n['drawing_vae']:.1f} dB on illustrations ({n['photo_thumb']:.1f} and {n['drawing_thumb']:.1f} dB "
            f"for 16x12 thumbnails). Held-out denoising MSE {n['trained_loss']:.4f} vs "
            f"{n['untrained_loss']:.4f} untrained and {n['zero_loss']:.4f} for predicting zero; the sample's dominant colour "
            f"is one its caption names in {n['caption_hit']:.0%} of cases vs {n['blind_hit']:.0%} caption-blind and "
            f"{n['shuffled_hit']:.0%} on shuffled captions (ground-truth photos: {n['truth_hit']:.0%}).")


def run_base(ctx: DemoContext) -> StageResult:
    """Train (or reuse) the tiny base, then score it on held-out identities against trivial baselines."""
    from atelier.diffusion.text2img import generate

    base_dir = ensure_base(ctx)
    heldout = heldout_attributes(ctx.data)
    rows = heldout[: ctx.pick(None, 4)]  # all held-out photos (40 in the demo data)
    held = HeldOut(ctx.data, [row["name"] for row in rows], ctx.resolution)
    captions, colours = held.captions(), [{garment["colour"] for garment in row["garments"]} for row in rows]
    images, truths = held.tensors("photo"), held.originals("photo")

    trained = load_components(base_dir)
    vae_rows, vae_scores = round_trip_rows(trained.vae, held)
    losses, loss_scores = loss_rows(trained, base_dir, images, captions, "tiny" if ctx.from_scratch else "small")

    def sample(prompts: list[str]) -> list[Image.Image]:
        return generate(trained, prompts, size_hw=ctx.resolution, steps=ctx.pick(20, 2), guidance_scale=3.0, seed=7,
                        show_progress=False).images

    rounds = ctx.pick(SAMPLES_PER_CAPTION, 1)  # image i gets seed 7 + i: every sample its own noise, shared with its blind twin
    with_caption = ctx.timed("sample held-out captions", lambda: sample(captions * rounds))
    blind = sample([""] * len(captions) * rounds)
    hits, hit_scores = colour_rows(with_caption, blind, truths, colours)
    small = [truth.resize((ctx.resolution[1], ctx.resolution[0]), Image.BICUBIC) for truth in truths[:10]]
    vae_cfg, unet_cfg = base_configs(ctx, ctx.data, ctx.out / "vae-data")
    numbers = headline(vae_scores, loss_scores, hit_scores)
    return StageResult(
        task="base",
        title="Tiny base model: text-to-image on FashionSynth",
        summary=base_summary(sum(p.numel() for p in trained.unet.parameters()), len(rows), numbers, ctx.resolution),
        tables=[Table(f"VAE round trip of held-out identities ({len(rows)} of the {len(heldout)} held-out photos and their "
                      "illustrations; means)", vae_rows),
                Table(f"held-out denoising loss ({len(rows)} photos, 10 fixed timesteps, fixed noise; means)", losses),
                Table(f"garment colour fidelity on {len(rows)} held-out captions, {rounds} samples each (dominant "
                      "FashionSynth palette colour of the figure)", hits)],
        checks=base_checks(numbers),
        figures=[Figure("held-out identities: ground-truth photo / generated from its caption / generated with an empty prompt",
                        ctx.out / "base" / "heldout_grid.png", grid=[small, with_caption[:10], blind[:10]]),
                 Figure("VAE training loss", ctx.out / "base" / "vae" / "loss.png"),
                 Figure("UNet training loss", ctx.out / "base" / "unet" / "loss.png")],
        config={"vae": vae_cfg, "unet": unet_cfg},
    )
