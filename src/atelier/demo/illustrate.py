"""Demo task `illustrate`: Uni-DlLoRA (adapters + dual LoRA) against the plain style-LoRA translation, for identity.

Trained (cached under OUT/illustrate): task `dual-lora` on the training identities' photo/illustration pairs, on the
demo's base, its illustration LoRA started from the style stage's LoRA (so the comparison measures what the paired
training and the Uni-adapter add), the real LoRA and the two T2I-Adapters (RGB + XDoG sketch) from scratch;
70 steps of 8 pairs, lr 5e-3, timesteps drawn in [0, 700) (the range strength 0.7 samples; our choice).
Translated: the photos of the held-out identities, by
- the style LoRA with the style stage's SDEdit recipe (`TRANSLATE` in demo/style.py: strength 0.2, 16 DDIM steps,
  guidance 3, prompt "an illustration, <caption>"; the row's label is made from the strength used);
- Uni-DlLoRA with the paper's settings (strength 0.7, DDPM, guidance 5, empty prompt, adapter scale 1 split evenly,
  only the illustration LoRA) but 20 steps instead of 50 (STEPS: the demo's budget);
- the same Uni-DlLoRA with adapter scale 0 (ablation: the adapters' share of the result).
Scored at the demo's resolution against what FashionSynth knows about each photo (atelier.metrics.per_image):
- closeness to the true illustration: PSNR (dB) and SSIM (Gaussian window), higher is better;
- garment colour error: RGB distance (0-255) between the mean colours inside the true garment mask of the output
  and of the true illustration, lower is better;
- garment-mask IoU: every output pixel takes the part label (background, hair, face, skin, top, bottom, dress,
  shoes) whose mean colour in the true illustration is nearest in RGB; the pixels labelled top/bottom/dress form
  the output's garment mask, compared with the true one by intersection over union, higher is better. The true
  illustration itself scores below 1 (pattern pixels can sit nearer another part's colour); it, the untranslated
  photo and the photo through the VAE alone (what any latent-space method can at best keep) are references.
Every check is a paired test of the per-image scores over 20 of the 40 held-out photos (every second: all 10 held-out
identities, 2 poses each; demo.heldout.scored_names; demo.results.paired_beats).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atelier.config import ModelConfig, TrainConfig, to_dict
from atelier.demo.base_model import ensure_base
from atelier.demo.context import DemoContext, cached
from atelier.demo.heldout import HeldOut, heldout_names, scored_names
from atelier.demo.results import Check, Figure, StageResult, Table, paired_beats, spread
from atelier.demo.style import PREFIX, TRANSLATE, ensure_style_lora
from atelier.diffusion.lora import LoraSettings
from atelier.methods.unidllora.train import DualLoraConfig, DualLoraSampleConfig, PairedDataConfig
from atelier.methods.unidllora.uni_adapter import UniAdapterSettings
from atelier.metrics.per_image import closeness, garment_colour_error, garment_mask_iou
from atelier.training.losses import DiffusionLossConfig

PAPER = {"strength": 0.7, "steps": 50, "guidance_scale": 5.0, "scheduler": "ddpm", "seed": 0}
STEPS = 20  # the demo's DDPM steps (the paper's 50 cost 2.5x the time for the same schedule)
GRID_ROWS = 8
PHOTO, ROUND_TRIP, TRUTH = ("reference: untranslated photo", "reference: photo through the VAE alone (encode + decode)",
                            "reference: true illustration")
STYLE_LORA = f"style LoRA translation (SDEdit {TRANSLATE['strength']}, prompt)"  # from the value, so it cannot drift
UNI, ABLATION = "Uni-DlLoRA (adapters + illustration LoRA)", "Uni-DlLoRA without adapters (scale 0)"


def dual_lora_config(ctx: DemoContext, data: Path, base: Path, style_lora: Path) -> DualLoraConfig:
    """Paired training on the training identities, the illustration LoRA started from the style stage's LoRA."""
    style, steps = data / "style", ctx.pick(70, 2)
    return DualLoraConfig(
        model=ModelConfig(base=str(base)),
        data=PairedDataConfig(real_root=str(style / "photo"), illustration_root=str(style / "illustration"),
                              list_file=str(style / "train.lst"), resolution=ctx.resolution, flip=True),
        lora=LoraSettings(rank=8, alpha=16.0),
        init_illustration_lora=str(style_lora),
        adapter=UniAdapterSettings(num_res_blocks=1),
        train=TrainConfig(max_steps=steps, batch_size=ctx.pick(8, 2), lr=5e-3, lr_schedule="cosine", warmup_steps=10,
                          weight_decay=0.0, checkpoint_every=steps, log_every=5, sample_every=steps),
        loss=DiffusionLossConfig(train_strength=PAPER["strength"]),  # train on the timesteps strength 0.7 samples
        sample=DualLoraSampleConfig(count=ctx.pick(4, 1), steps=ctx.pick(STEPS, 3)),
    )


def ensure_dual_lora(ctx: DemoContext) -> tuple[Path, DualLoraConfig]:
    """Train (or reuse) the Uni-DlLoRA checkpoint; return its final/ folder and config."""
    from atelier.methods.unidllora.train import DualLoraTask

    style_lora = ensure_style_lora(ctx)[0]
    cfg = dual_lora_config(ctx, ctx.data, ensure_base(ctx), style_lora)

    def build(folder: Path) -> None:
        ctx.train("train Uni-DlLoRA", lambda: DualLoraTask(cfg), cfg, folder)

    cached(ctx.out / "illustrate" / "run", {"config": to_dict(cfg), **ctx.stamps("base", "style")}, build)
    return ctx.out / "illustrate" / "run" / "final", cfg


def translations(ctx: DemoContext, base: Path, style_lora: Path, checkpoint: Path, photos: torch.Tensor,
                 prompts: list[str]) -> tuple[dict[str, list[Image.Image]], torch.Tensor, list[Image.Image]]:
    """Held-out photos by the style LoRA (its own recipe) and by Uni-DlLoRA with and without adapters; the sketches;
    the photos through the VAE alone (strength 0), the most any latent-space method can keep of them."""
    from atelier.diffusion.img2img import translate
    from atelier.methods.style.model import load_style_model
    from atelier.methods.unidllora.model import load_illustrator
    from atelier.methods.unidllora.sample import illustrate

    style_settings = dict(TRANSLATE, steps=ctx.pick(TRANSLATE["steps"], 5), show_progress=False)
    paper = dict(PAPER, steps=ctx.pick(STEPS, 3), show_progress=False)
    styled, _ = load_style_model(str(base), str(style_lora))
    model = load_illustrator(checkpoint)
    uni = ctx.timed("translate with Uni-DlLoRA", lambda: illustrate(model, photos, adapter_scale=1.0, **paper))
    return {
        STYLE_LORA: ctx.timed("translate with the style LoRA", lambda: translate(styled, photos, prompts, **style_settings).images),
        UNI: uni.images,
        ABLATION: ctx.timed("translate without adapters", lambda: illustrate(model, photos, adapter_scale=0.0, **paper).images),
    }, uni.sketches, ctx.timed("VAE round trip", lambda: translate(model.components, photos, [""] * len(photos), strength=0.0,
                                                                   show_progress=False).images)


def score_rows(results: dict[str, list[Image.Image]], truths, masks, parses) -> tuple[list[dict], dict[str, dict]]:
    """The results table (one row per method) and the per-image numbers behind it."""
    numbers, rows = {}, []
    for method, images in results.items():
        itself = images is truths  # closeness of the truth to itself is not a measurement
        close = closeness(images, truths) if not itself else {"psnr": np.full(len(truths), np.nan), "ssim": np.full(len(truths), np.nan)}
        numbers[method] = {"psnr": close["psnr"], "ssim": close["ssim"], "iou": garment_mask_iou(images, truths, parses),
                           "colour": garment_colour_error(images, truths, masks)}
        rows.append({"images": method,
                     "PSNR dB vs true illustration (higher is better)": "-" if itself else float(close["psnr"].mean()),
                     "SSIM (higher is better)": "-" if itself else float(close["ssim"].mean()),
                     "garment colour error, RGB distance (lower is better)": float(numbers[method]["colour"].mean()),
                     "garment-mask IoU (higher is better)": float(numbers[method]["iou"].mean())})
    return rows, numbers


def win_rows(numbers: dict[str, dict], count: int) -> list[dict]:
    """Per-image comparison of Uni-DlLoRA with the style-LoRA translation and with its own run without adapters."""
    uni = numbers[UNI]
    return [{"Uni-DlLoRA compared with": name, "images with higher garment-mask IoU": f"{int((uni['iou'] > other['iou']).sum())}/{count}",
             "images with higher PSNR": f"{int((uni['psnr'] > other['psnr']).sum())}/{count}",
             "mean IoU gain": float((uni["iou"] - other["iou"]).mean()), "mean PSNR gain dB": float((uni["psnr"] - other["psnr"]).mean())}
            for name, other in (("style LoRA translation", numbers[STYLE_LORA]), ("Uni-DlLoRA without adapters", numbers[ABLATION]))]


def illustrate_checks(numbers: dict[str, dict]) -> list[Check]:
    """The stage's claims, each a paired test over the held-out photos: Uni-DlLoRA against the style-LoRA
    translation, and its adapters' share."""
    uni, plain, ablation = (numbers[key] for key in (UNI, STYLE_LORA, ABLATION))
    return [
        paired_beats("Uni-DlLoRA keeps garment shapes better than the style-LoRA translation (garment-mask IoU)",
                     uni["iou"], plain["iou"], digits=3),
        paired_beats("Uni-DlLoRA keeps garment colours better than the style-LoRA translation (garment colour error)",
                     uni["colour"], plain["colour"], lower_is_better=True, digits=2),
        paired_beats("Uni-DlLoRA is closer to the true illustration than the style-LoRA translation (PSNR)",
                     uni["psnr"], plain["psnr"], unit=" dB", digits=2),
        paired_beats("the Uni-adapter helps: Uni-DlLoRA beats its own run without adapters on garment-mask IoU",
                     uni["iou"], ablation["iou"], digits=3),
    ]


def illustrate_summary(cfg: DualLoraConfig, count: int, numbers: dict[str, dict]) -> str:
    """The stage's paragraph: what was trained and translated, the scores beside the style LoRA and the references."""
    uni, plain, ablation = (numbers[key] for key in (UNI, STYLE_LORA, ABLATION))
    return (f"Uni-DlLoRA (dual LoRA r 8 + RGB/XDoG-sketch T2I-Adapters, {cfg.train.max_steps} paired steps from the style "
            f"stage's LoRA) translated the {count} photos of held-out identities with the paper's settings (DDPM at "
            f"{STEPS} steps, paper: {PAPER['steps']}); the style "
            f"LoRA translated them with its own recipe. Garment-mask IoU {uni['iou'].mean():.3f} vs {plain['iou'].mean():.3f} "
            f"(style LoRA) and {ablation['iou'].mean():.3f} (no adapters); the true illustration scores {numbers[TRUTH]['iou'].mean():.3f}, "
            f"the untranslated photo {numbers[PHOTO]['iou'].mean():.3f}; "
            f"garment colour error {uni['colour'].mean():.1f} vs {plain['colour'].mean():.1f}; PSNR {uni['psnr'].mean():.2f} vs "
            f"{plain['psnr'].mean():.2f} dB. The photo through the VAE alone (the most a latent-space method can keep) has "
            f"colour error {numbers[ROUND_TRIP]['colour'].mean():.1f} and IoU {numbers[ROUND_TRIP]['iou'].mean():.3f}. "
            "Metric definitions are in the stage's docstring and the table captions.")


def run_illustrate(ctx: DemoContext) -> StageResult:
    """Train (or reuse) Uni-DlLoRA, translate held-out photos with it and with the style LoRA, score identity."""
    from atelier.utils.images import tensor_to_pil

    checkpoint, cfg = ensure_dual_lora(ctx)
    base, style_lora = ensure_base(ctx), ensure_style_lora(ctx)[0]
    held = HeldOut(ctx.data, scored_names(ctx.data, ctx.fast), ctx.resolution)
    photos, truths = held.tensors("photo"), held.images("illustration")
    outputs, sketches, round_trip = translations(ctx, base, style_lora, checkpoint, photos, held.captions(PREFIX))
    results = {PHOTO: [tensor_to_pil(photo) for photo in photos], ROUND_TRIP: round_trip, **outputs, TRUTH: truths}
    rows, numbers = score_rows(results, truths, held.label_maps("garment_mask"), held.label_maps("parse"))
    sketch_images = [tensor_to_pil(sketch.repeat(3, 1, 1) * 2 - 1) for sketch in sketches]
    columns = [results[PHOTO], round_trip, sketch_images, *outputs.values(), truths]
    return StageResult(
        task="illustrate",
        title="Uni-DlLoRA: identity-preserving photo -> illustration vs the style LoRA",
        summary=illustrate_summary(cfg, len(held.names), numbers),
        tables=[Table(f"{len(held.names)} of the {len(heldout_names(ctx.data))} held-out photos at {ctx.resolution[1]}x{ctx.resolution[0]} px, "
                      "means; IoU: output pixels labelled "
                      "by the nearest true part colour, garment parts vs the true garment mask; colour error: mean colour "
                      "inside the true garment mask vs the true illustration's", rows),
                Table(f"per-image comparison of Uni-DlLoRA with the others ({len(held.names)} held-out photos)",
                      win_rows(numbers, len(held.names)))],
        checks=illustrate_checks(numbers),
        figures=[Figure("photo / photo through the VAE alone / XDoG sketch / style-LoRA translation / Uni-DlLoRA / Uni-DlLoRA "
                        "without adapters / true illustration", ctx.out / "illustrate" / "comparison.png",
                        grid=[[column[i] for column in columns] for i in spread(range(len(held.names)), GRID_ROWS)]),
                 Figure("Uni-DlLoRA training sample: training photo / sketch / translation / true illustration",
                        checkpoint.parent / "samples" / f"step-{cfg.train.max_steps:07d}.png"),
                 Figure("Uni-DlLoRA training loss (alternating illustration and real steps)", checkpoint.parent / "loss.png")],
        config={"dual_lora": cfg, "uni_dllora_sampling": {**PAPER, "steps": STEPS},
                "style_lora_sampling": {**TRANSLATE, "prompt": PREFIX + "<photo caption>"}},
    )
