"""Demo task `base`: measure the base model every stage starts from, on people it has never seen.

The held-out set is its own FashionSynth draw (HELDOUT_DATA: seed 3, unseen by the embedded base, which learned from
seed 2, and by the --from-scratch base, which learns from seeds 0 and 1), one photo per person, so every caption is
another person's and the paired tests count independent images. Measured, each beside a trivial baseline:
- VAE round trip (PSNR) of photos and illustrations vs a bicubic thumbnail of the latent grid's size;
- denoising loss (fixed noise and timesteps) of the trained UNet vs the same UNet at initialisation vs predicting 0;
- caption colour hit rate: share of samples whose dominant palette colour is a garment colour the caption names,
  against the same model with an empty prompt (caption-blind, same seeds) and the captioned samples scored on
  another person's caption (shuffled: what chance gives these very images);
- garment type (dress vs top + bottom, read from the colours of a chest and a thigh band: metrics.per_image
  .garment_type), as a class-balanced hit rate (chance: 50%), against the same two baselines.
The targets the base was built to meet (TARGETS) are tabled beside what it measures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atelier.demo.base_model import base_config, ensure_base
from atelier.demo.context import DemoContext, synthesized
from atelier.demo.heldout import HeldOut
from atelier.demo.results import Check, Figure, StageResult, Table, all_of, paired_beats
from atelier.diffusion.components import SDComponents, build_tiny_components, embedded_base_dir, load_components
from atelier.diffusion.encode import encode_images, encode_prompts
from atelier.metrics.per_image import balanced_hits, colour_hits, garment_type, psnr_per_image

HELDOUT_DATA = {"identities": 32, "poses_per_identity": 2, "size": (176, 256), "seed": 3, "test_fraction": 0.5}
VAE_PSNR, THUMBNAIL_PSNR = "VAE round trip PSNR dB", "baseline: latent-grid thumbnail PSNR dB"
LOSS = "held-out denoising MSE (lower is better)"
HIT, TYPE = "caption colour hit rate", "garment type hit rate (class-balanced; chance 50%)"
# (what, measured key, target, higher is the goal): the embedded base's targets (issue: "an embedded base that can draw")
TARGETS = [("VAE round trip of held-out photos, dB PSNR", "photo_vae", 28.0, True),
           ("caption colour hit rate", "caption_hit", 0.60, True),
           ("caption-blind colour hit rate", "blind_hit", 0.20, False),
           ("shuffled-caption colour hit rate", "shuffled_hit", 0.20, False),
           ("garment type hit rate (class-balanced)", "caption_type", 0.70, True)]
SAMPLE_STEPS, GUIDANCE = 8, 5.0  # DDIM steps and guidance of the held-out samples
LOSS_TIMESTEPS = torch.linspace(100, 900, 3).long()  # where the held-out denoising loss is measured
Scores = dict[str, np.ndarray]  # a number's name -> its value per held-out image, in one order


def ensure_heldout(ctx: DemoContext) -> Path:
    """The base stage's held-out draw (cached under OUT/base-heldout)."""
    return synthesized(ctx, "base-heldout", HELDOUT_DATA, {"identities": 4, "size": (88, 128)})


def heldout_rows(data: Path) -> list[dict]:
    """One attribute row per person of the draw (their first pose), in identity order."""
    import json

    rows = [json.loads(line) for line in (data / "labels" / "attributes.jsonl").read_text().splitlines() if line.strip()]
    first: dict[int, dict] = {}
    for row in rows:
        first.setdefault(row["identity"], row)
    return [first[identity] for identity in sorted(first)]


@torch.no_grad()
def heldout_denoising_loss(components: SDComponents, images: torch.Tensor, captions: list[str],
                           predict_zero: bool = False) -> np.ndarray:
    """Per-image epsilon-MSE, averaged over LOSS_TIMESTEPS (fixed) with fixed noise (comparable across models and paired
    image by image); predict_zero: the trivial baseline."""
    unet = components.unet
    latents, _ = encode_images(components.vae, images)
    text = encode_prompts(components.tokenizer, components.text_encoder, captions)
    generator = torch.Generator().manual_seed(1234)
    losses = []
    for t in LOSS_TIMESTEPS:
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


def garment_kind(row: dict) -> str:
    """`dress` or `separates` (top + bottom): what the attribute row's caption asks for."""
    return "dress" if any(garment["type"] == "dress" for garment in row["garments"]) else "separates"


def caption_rows(with_caption: list[Image.Image], blind: list[Image.Image], truths: list[Image.Image],
                 rows: list[dict]) -> tuple[list[dict], Scores]:
    """Colour and garment-type hit rates of the captioned samples beside the caption-blind ones (same seeds), the
    captioned ones scored on the next person's caption (shuffled) and the ground-truth photos; one number per image
    (a hit is 1; the type's numbers are class-balanced contributions, summing to the rate)."""
    colours = [{garment["colour"] for garment in row["garments"]} for row in rows]
    kinds = [garment_kind(row) for row in rows]
    shuffled_colours, shuffled_kinds = colours[1:] + colours[:1], kinds[1:] + kinds[:1]
    read = {name: [garment_type(image) for image in images] for name, images in
            (("caption", with_caption), ("blind", blind), ("truth", truths))}
    scores = {"caption_hit": colour_hits(with_caption, colours).astype(float),
              "blind_hit": colour_hits(blind, colours).astype(float),
              "shuffled_hit": colour_hits(with_caption, shuffled_colours).astype(float),
              "truth_hit": colour_hits(truths, colours).astype(float),
              "caption_type": balanced_hits(read["caption"], kinds), "blind_type": balanced_hits(read["blind"], kinds),
              "shuffled_type": balanced_hits(read["caption"], shuffled_kinds), "truth_type": balanced_hits(read["truth"], kinds)}
    labels = ("trained model, prompted with the caption", "baseline: trained model, empty prompt (caption-blind, same seeds)",
              "baseline: the captioned samples scored on another person's caption", "reference: the ground-truth photos")
    table = [{"images": label, HIT: float(scores[f"{key}_hit"].mean()), TYPE: float(scores[f"{key}_type"].sum())}
             for label, key in zip(labels, ("caption", "blind", "shuffled", "truth"))]
    return table, scores


def target_rows(n: Scores) -> list[dict]:
    """Each target beside what the base measures (type rates are sums of balanced contributions, the rest means)."""
    rows = []
    for what, key, target, higher in TARGETS:
        measured = float(n[key].sum() if key.endswith("_type") else n[key].mean())
        met = measured >= target if higher else measured <= target
        rows.append({"target": what, "goal": f"{'>=' if higher else '<='} {target:g}", "measured": measured,
                     "met": "yes" if met else "no"})
    return rows


# Why a target can be missed at this size and what would close it (docs/training.md#the-embedded-base-fashionsynth-base)
SHORTFALL = ("The embedded base is an 8.6M-parameter UNet trained 3500 steps of 16 images (about 2.5 hours on 2 CPU "
             "cores) with a 2-layer, 64-wide text encoder. Its caption following was still rising with training (colour "
             "hit rate 42% at 1750 steps, 60% at 3500, on 100 held-out people of seed 3), and the small text encoder binds colour words to "
             "the wrong garment or to the whole figure (the grid shows one garment's colour or pattern spread over both). "
             "What it would take: a longer UNet schedule with EMA weights and a wider text encoder (hours more on these "
             "cores, minutes on a GPU), and a longer VAE schedule for the round trip (about +1 dB per 1000 steps when it "
             "was stopped).")


def missed_targets(n: Scores) -> list[str]:
    """The report's note when a target is missed: which, by how much, and why (SHORTFALL); nothing when all are met."""
    missed = [f"{row['target']} {row['measured']:.4g} (goal {row['goal']})" for row in target_rows(n) if row["met"] == "no"]
    return [f"Targets missed: {'; '.join(missed)}. {SHORTFALL}"] if missed else []


def base_checks(n: Scores) -> list[Check]:
    """The stage's claims, each a paired test over the held-out images: each number beyond its trivial baseline."""
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
        paired_beats("the colours follow each sample's own caption: hit rate above another person's caption",
                     n["caption_hit"], n["shuffled_hit"], digits=3),
        paired_beats("captions choose the garment type (dress or top + bottom): above the caption-blind samples",
                     n["caption_type"], n["blind_type"], digits=4),
        paired_beats("the garment type follows each sample's own caption: above another person's caption",
                     n["caption_type"], n["shuffled_type"], digits=4),
    ]


def base_summary(ctx: DemoContext, unet_parameters: int, count: int, scores: Scores) -> str:
    """The stage's paragraph: which base, on what it was scored, every headline number (means)."""
    n = {name: float(values.sum() if name.endswith("_type") else values.mean()) for name, values in scores.items()}
    height, width = ctx.resolution
    which = ("The tiny base trained in this run (--from-scratch: VAE, then UNet and text encoder on the demo's "
             "training photos)" if ctx.from_scratch else
             "The embedded FashionSynth base (shipped with atelier; trained by configs/fashionsynth-base.yaml on 1900 "
             "other people)")
    return (f"{which}: {unet_parameters / 1e6:.2f}M-parameter UNet, VAE with 4x downsampling, {width}x{height} px; "
            f"scored on {count} people it never saw, one photo and one caption each. The VAE's round trip reaches "
            f"{n['photo_vae']:.1f} dB PSNR on photos and {n['drawing_vae']:.1f} dB on illustrations ({n['photo_thumb']:.1f} "
            f"and {n['drawing_thumb']:.1f} dB for thumbnails of the latent grid's size). Held-out denoising MSE "
            f"{n['trained_loss']:.4f} vs {n['untrained_loss']:.4f} untrained and {n['zero_loss']:.4f} for predicting zero. "
            f"A sample's dominant colour is one its caption names in {n['caption_hit']:.0%} of cases vs {n['blind_hit']:.0%} "
            f"caption-blind and {n['shuffled_hit']:.0%} on another person's caption (ground-truth photos: "
            f"{n['truth_hit']:.0%}); its garment type matches the caption at a class-balanced {n['caption_type']:.0%} vs "
            f"{n['blind_type']:.0%} caption-blind and {n['shuffled_type']:.0%} shuffled (true photos: {n['truth_type']:.0%}).")


def run_base(ctx: DemoContext) -> StageResult:
    """Score the base (trained here only with --from-scratch) on held-out people against trivial baselines."""
    from atelier.diffusion.text2img import generate

    base_dir = ensure_base(ctx)
    data = ensure_heldout(ctx)
    rows = heldout_rows(data)
    held = HeldOut(data, [row["name"] for row in rows], ctx.resolution)
    captions, truths = held.captions(), held.images("photo")

    trained = load_components(base_dir)
    vae_rows, vae_scores = ctx.timed("VAE round trip", lambda: round_trip_rows(trained.vae, held))
    losses, loss_scores = ctx.timed("held-out denoising loss", lambda: loss_rows(
        trained, base_dir, held.tensors("photo"), captions, "tiny" if ctx.from_scratch else "small"))

    def sample(prompts: list[str], guidance: float) -> list[Image.Image]:  # image i gets seed 7 + i, as its blind twin
        return generate(trained, prompts, size_hw=ctx.resolution, steps=ctx.pick(SAMPLE_STEPS, 2), guidance_scale=guidance,
                        seed=7, show_progress=False).images

    with_caption = ctx.timed("sample held-out captions", lambda: sample(captions, GUIDANCE))
    # the empty prompt is also the unconditional one, so guidance changes nothing there: 1.0 skips the second pass
    blind = ctx.timed("sample caption-blind", lambda: sample([""] * len(captions), 1.0))
    hits, hit_scores = caption_rows(with_caption, blind, truths, rows)
    numbers = vae_scores | loss_scores | hit_scores
    logs = embedded_base_dir() if not ctx.from_scratch else None
    shown = 12
    return StageResult(
        task="base",
        title="Base model: text-to-image on FashionSynth" + (" (trained here, --from-scratch)" if ctx.from_scratch else
                                                              " (embedded)"),
        summary=base_summary(ctx, sum(p.numel() for p in trained.unet.parameters()), len(rows), numbers),
        tables=[Table("the base's targets (held-out people) and what it measures", target_rows(numbers)),
                Table(f"VAE round trip of {len(rows)} held-out photos and their illustrations (means)", vae_rows),
                Table(f"held-out denoising loss ({len(rows)} photos, timesteps {LOSS_TIMESTEPS.tolist()}, fixed noise; means)", losses),
                Table(f"captions followed: {len(rows)} held-out captions, one sample each ({SAMPLE_STEPS} DDIM steps, guidance "
                      f"{GUIDANCE}); colour: dominant FashionSynth palette colour of the figure", hits)],
        checks=base_checks(numbers),
        figures=[Figure("held-out people: ground-truth photo / generated from its caption / generated with an empty "
                        "prompt (same seed). Captions, left to right: " + " | ".join(captions[:shown]),
                        ctx.out / "base" / "heldout_grid.png", grid=[truths[:shown], with_caption[:shown], blind[:shown]]),
                 Figure("VAE training loss", logs / "vae-loss.png" if logs else ctx.out / "base" / "vae" / "loss.png"),
                 Figure("UNet training loss", logs / "unet-loss.png" if logs else ctx.out / "base" / "unet" / "loss.png")],
        config=base_config(ctx),
        notes=[] if ctx.from_scratch else missed_targets(numbers),
    )
