"""Demo task `style`: a style LoRA for FashionSynth's illustration style on the demo's base, then photo -> illustration.

Trained (cached under OUT/style): a LoRA (r 8, alpha 16 on the UNet's to_q/k/v/out.0, the recipe's) on the
illustrations of the training identities, captions prefixed "an illustration, ", timesteps in [0, 300) because
translation only denoises from there (`train_strength` 0.3). (The image adapter, `task: image-adapter`, is left out:
on this base it did not bring the translation closer, and the demo's budget goes to the methods' claims.)
Translated: the photos of the held-out identities
(style/test.lst), prompted with the identifier plus the photo's caption, two ways:
- SDEdit, the recipe: random noise to `strength`, then DDIM with the LoRA. Deviation from the recipe's strength 0.5 /
  guidance 7.5: on the small base every extra noised step blurs, so 0.2 with guidance 3; 16 DDIM steps.
- DDIM inversion (`translate(inversion=True)`): the base model (LoRA off, empty prompt) carries the photo's latents
  to strength 0.5 deterministically, then DDIM with the LoRA; without the LoRA this returns the photo, so what
  changes is the LoRA's doing. With `restore_detail`, what the VAE loses of the photo is added back. All the
  inversion rows share one inversion (it runs the base model alone).

Metric, against synthetic ground truth: FashionSynth renders every photo also as the illustration of the same person
in the same pose. PSNR (dB, higher is better), SSIM (Gaussian window) and mean absolute error (0-255) at the demo's size,
each against (a) the true illustration and (b) the true illustration passed through the base's VAE. Every diffusion
output is a VAE decoding, so on (a) none can beat the VAE's own rendering of the truth (the "ceiling" row) unless
detail is restored; (b) removes that shared loss and measures what the denoising and the LoRA do. Checks: the
translation with the LoRA beats the untranslated photo (with restored detail on (a); through the VAE on (b)) and the
same translation without the LoRA, each by a paired test of per-image PSNR over 20 of the 40 held-out photos (every
second: all 10 held-out identities, 2 poses each; demo.heldout.scored_names; demo.results.paired_beats); margins with their intervals and per-image win counts are reported beside
them, for SDEdit too.
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
from atelier.demo.results import Check, Figure, StageResult, Table, all_of, paired_beats, spread
from atelier.methods.style.train import StyleLoraConfig
from atelier.metrics.paired import paired_test
from atelier.metrics.per_image import closeness, garment_colours
from atelier.training.losses import DiffusionLossConfig
from atelier.training.tasks.text2img import CaptionedDataConfig, SampleConfig

PREFIX = "an illustration, "
TRANSLATE = {"strength": 0.2, "steps": 16, "guidance_scale": 3.0, "seed": 0, "scheduler": "ddim"}  # SDEdit, the recipe
INVERT = {**TRANSLATE, "strength": 0.5, "inversion": True}  # DDIM inversion by the base model, then the LoRA
GRID_ROWS = 8
PHOTO, PHOTO_VAE, PLAIN, STYLED, INV_PLAIN, INV_STYLED, DETAIL, CEILING = (
    "untranslated photo", "untranslated photo through the VAE (strength 0)",
    f"SDEdit {TRANSLATE['strength']} without the LoRA", f"SDEdit {TRANSLATE['strength']} with the style LoRA (the recipe)",
    f"inversion {INVERT['strength']} without the LoRA", f"inversion {INVERT['strength']} with the style LoRA",
    f"inversion {INVERT['strength']} with the style LoRA + restore detail", "ceiling: true illustration through the VAE")
OTHER = f"inversion {INVERT['strength']} with the style LoRA, against another person's photo"


def style_config(ctx: DemoContext, data: Path, base: Path) -> StyleLoraConfig:
    """The style LoRA's config (illustrations of the training identities; configs/tiny-style-lora.yaml holds it)."""
    style = data / "style"
    lora_steps, batch = ctx.pick(40, 2), ctx.pick(16, 2)
    return StyleLoraConfig(
        model=ModelConfig(base=str(base)),
        data=CaptionedDataConfig(root=str(style / "illustration"), list_file=str(style / "train.lst"), caption_prefix=PREFIX,
                                 resolution=ctx.resolution, flip=True),
        train=TrainConfig(max_steps=lora_steps, batch_size=batch, lr=3e-3, lr_schedule="cosine", warmup_steps=10,
                          weight_decay=0.0, checkpoint_every=100, log_every=5, sample_every=lora_steps),
        loss=DiffusionLossConfig(train_strength=0.3),
        sample=SampleConfig(prompts=[PREFIX + "a woman wearing a red dress", PREFIX + "a man wearing a blue top and black trousers"],
                            steps=ctx.pick(SampleConfig.steps, 2)),
    )


def ensure_style_lora(ctx: DemoContext) -> tuple[Path, StyleLoraConfig]:
    """Train (or reuse) the style LoRA; return its final/ folder and config."""
    from atelier.methods.style.train import StyleLoraTask

    lora_cfg = style_config(ctx, ctx.data, ensure_base(ctx))

    def build(folder: Path) -> None:
        ctx.train("train style LoRA", lambda: StyleLoraTask(lora_cfg), lora_cfg, folder / "lora")

    cached(ctx.out / "style", {"lora": to_dict(lora_cfg), **ctx.stamps("base")}, build)
    return ctx.out / "style" / "lora" / "final", lora_cfg


def translations(ctx: DemoContext, base: Path, lora: Path, photos: torch.Tensor, truth_tensors: torch.Tensor,
                 prompts: list[str]) -> dict[str, list[Image.Image]]:
    """Every variant of the closeness table (SDEdit and inversion, without/with the LoRA, ...). The inversion variants
    share one inversion (the base model's, the same for all) and the restored-detail variant is the LoRA inversion's
    latents plus what the VAE loses of the photo, so each distinct piece of sampling runs once."""
    from atelier.diffusion.img2img import translate, with_lost_detail
    from atelier.diffusion.speed import SpeedConfig
    from atelier.methods.style.model import load_style_model
    from atelier.utils.images import tensor_to_pil

    plain, _ = load_style_model(str(base))
    # unfused: the inversion runs the base model with the LoRA switched off
    styled, _ = load_style_model(str(base), str(lora), speed=SpeedConfig(fuse_lora=False))
    steps = ctx.pick(TRANSLATE["steps"], 5)  # --fast: 5 steps, so even strength 0.2 runs one

    def run(components, settings: dict, **options):
        return translate(components, photos, prompts, **{**settings, "steps": steps}, **options, show_progress=False)

    def inversions() -> dict[str, list[Image.Image]]:
        without = run(plain, INVERT)
        with_lora = run(styled, INVERT, inverted=without.start)
        detail = with_lost_detail(styled.vae, with_lora.latents, photos)
        return {INV_PLAIN: without.images, INV_STYLED: with_lora.images, DETAIL: [tensor_to_pil(image) for image in detail]}

    headline = ctx.timed("translate: SDEdit", lambda: {PHOTO_VAE: run(plain, {**TRANSLATE, "strength": 0.0}).images,
                                                        PLAIN: run(plain, TRANSLATE).images, STYLED: run(styled, TRANSLATE).images})
    headline |= ctx.timed("translate: inversion", inversions)
    headline[CEILING] = translate(plain, truth_tensors, prompts, **{**TRANSLATE, "strength": 0.0}, show_progress=False).images
    return headline


Scores = dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]  # variant -> (vs truth, vs truth through VAE)


def margin(styled: np.ndarray, other: np.ndarray) -> str:
    """Mean per-image PSNR gain of the LoRA translation over another variant, its 95% interval and win count."""
    test = paired_test(styled, other)
    return (f"{test.mean_difference:+.2f} dB [{test.interval[0]:+.2f}, {test.interval[1]:+.2f}], "
            f"higher on {test.wins}/{test.n}")


def colour_kept(results: dict[str, list[Image.Image]], masks: list[np.ndarray], captions: list[str]) -> dict[str, np.ndarray]:
    """Garment colour error (RGB distance, 0-255, of the mean colour inside the true garment mask) of each translation
    against its own photo, and (OTHER) of the LoRA inversion against another person's photo (the next image whose
    caption differs): what an output that ignored the photo's colours would score."""
    photos = garment_colours(results[PHOTO], masks)
    errors = {method: np.linalg.norm(garment_colours(results[method], masks) - photos, axis=1)
              for method in (PHOTO_VAE, STYLED, INV_STYLED, DETAIL)}
    n = len(captions)
    other = [next((i + k) % n for k in range(1, n + 1) if captions[(i + k) % n] != captions[i]) for i in range(n)]
    errors[OTHER] = np.linalg.norm(garment_colours(results[INV_STYLED], masks) - photos[other], axis=1)
    return errors


def versus(ours: np.ndarray, other: np.ndarray) -> str:
    """'above', 'below' or 'no different from' the other, as the 95% interval of the paired difference says."""
    low, high = paired_test(ours, other).interval
    return "above" if low > 0 else "below" if high < 0 else "no different from"


def style_checks(raw: dict[str, np.ndarray], vae: dict[str, np.ndarray], colour: dict[str, np.ndarray]) -> list[Check]:
    """The stage's claims, each a paired test over the held-out photos: per-image PSNR against the true illustration
    (raw) and against it through the VAE (vae), and the garment colour kept (colour_kept)."""
    def wins(name: str, table: dict[str, np.ndarray], ours: str, other: str) -> Check:
        return paired_beats(name, table[ours], table[other], unit=" dB", digits=2)

    return [
        wins("LoRA translation (inversion + restore detail) closer to the true illustration than the raw untranslated photo "
             "(mean PSNR)", raw, DETAIL, PHOTO),
        wins("LoRA translation (inversion) closer than the untranslated photo through the same VAE (mean PSNR vs truth "
             "through the VAE)", vae, INV_STYLED, PHOTO_VAE),
        all_of("LoRA translation closer than the same translation without the LoRA (mean PSNR, both measures, inversion "
               "and SDEdit)", [wins(f"{method} vs {measure}", table, ours, other)
                               for measure, table in (("truth", raw), ("truth through the VAE", vae))
                               for method, ours, other in (("inversion", INV_STYLED, INV_PLAIN), ("SDEdit", STYLED, PLAIN))]),
        paired_beats("LoRA translation (inversion) keeps the photo's garment colours: colour error against its own photo "
                     "below that against another person's photo", colour[INV_STYLED], colour[OTHER],
                     lower_is_better=True, digits=1),
    ]


def score_tables(scores: Scores, truths: list[Image.Image], total: int) -> list[Table]:
    """The closeness and margin tables (scored on len(truths) of the `total` held-out photos)."""
    count = len(truths)
    rows = [{"images": method, "PSNR dB": float(raw["psnr"].mean()), "SSIM": float(raw["ssim"].mean()), "MAE": float(raw["mae"].mean()),
             "PSNR dB (vs truth through VAE)": float(vae["psnr"].mean()), "SSIM (vs truth through VAE)": float(vae["ssim"].mean()),
             "MAE (vs truth through VAE)": float(vae["mae"].mean())} for method, (raw, vae) in scores.items()]
    raw = {method: pair[0]["psnr"] for method, pair in scores.items()}
    vae = {method: pair[1]["psnr"] for method, pair in scores.items()}
    compared = [(DETAIL, PHOTO, True, False), (INV_STYLED, PHOTO_VAE, False, True), (INV_STYLED, INV_PLAIN, True, True),
                (STYLED, PHOTO, True, False), (STYLED, PHOTO_VAE, False, True), (STYLED, PLAIN, True, True)]
    margins = [{"translation": ours, "vs": other, "PSNR vs true illustration": margin(raw[ours], raw[other]) if on_raw else "-",
                "PSNR vs truth through the VAE": margin(vae[ours], vae[other]) if on_vae else "-"}
               for ours, other, on_raw, on_vae in compared]
    return [Table(f"closeness to the true illustration ({count} of the {total} held-out photos, "
                  f"{truths[0].width}x{truths[0].height} px; means; PSNR and SSIM higher is better, MAE on 0-255 lower is better)",
                  rows),
            Table(f"margins over {count} held-out photos (mean per-image PSNR difference [95% bootstrap interval]; images "
                  "where the first is higher)", margins)]


def style_summary(lora_cfg: StyleLoraConfig, count: int, raw: dict[str, np.ndarray], vae: dict[str, np.ndarray],
                  colour: dict[str, np.ndarray]) -> str:
    """The stage's paragraph: what was trained and translated, the headline and its baselines."""
    return (f"A style LoRA (r 8, alpha 16, {lora_cfg.train.max_steps} steps) learned FashionSynth's illustration style from the "
            f"training identities' illustrations; the {count} photos of held-out identities were translated and scored "
            f"against their true illustrations at {lora_cfg.data.resolution[1]}x{lora_cfg.data.resolution[0]} px. Headline: DDIM inversion of the photo by "
            f"the base model to strength {INVERT['strength']} of a {INVERT['steps']}-step DDIM schedule, then sampling back with the LoRA (guidance "
            f"{INVERT['guidance_scale']}), plus restored detail: {raw[DETAIL].mean():.2f} dB PSNR vs {raw[PHOTO].mean():.2f} dB for "
            f"the untranslated photo ({margin(raw[DETAIL], raw[PHOTO])}). Without restored detail, against the truth through the "
            f"VAE (which removes the codec's shared loss): {vae[INV_STYLED].mean():.2f} dB vs {vae[PHOTO_VAE].mean():.2f} dB for the "
            f"photo through the VAE ({margin(vae[INV_STYLED], vae[PHOTO_VAE])}) and {vae[INV_PLAIN].mean():.2f} dB without the LoRA "
            f"({margin(vae[INV_STYLED], vae[INV_PLAIN])}). The recipe's SDEdit (strength {TRANSLATE['strength']}, random noise) "
            f"also gains from the LoRA ({margin(vae[STYLED], vae[PLAIN])} through the VAE) but its noise costs detail: "
            f"{vae[STYLED].mean():.2f} dB, {versus(vae[STYLED], vae[PHOTO_VAE])} the photo through the VAE "
            f"({margin(vae[STYLED], vae[PHOTO_VAE])}). Garment "
            f"colours kept: the LoRA inversion's mean garment colour is {colour[INV_STYLED].mean():.1f} (RGB distance) from its "
            f"photo's ({colour[PHOTO_VAE].mean():.1f} for the photo through the VAE, {colour[OTHER].mean():.1f} from another "
            f"person's photo).")


def run_style(ctx: DemoContext) -> StageResult:
    """Train (or reuse) the style LoRA, translate held-out photos and score them against the truth."""
    lora, lora_cfg = ensure_style_lora(ctx)
    held = HeldOut(ctx.data, scored_names(ctx.data, ctx.fast), ctx.resolution)
    truths = held.images("illustration")
    headline = translations(ctx, ensure_base(ctx), lora, held.tensors("photo"), held.tensors("illustration"),
                            held.captions(PREFIX))
    rendered = headline[CEILING]
    results = {PHOTO: held.images("photo"), **headline}
    scores = {method: (closeness(images, truths), closeness(images, rendered)) for method, images in results.items()}
    raw, vae = ({method: pair[index]["psnr"] for method, pair in scores.items()} for index in (0, 1))
    colour = colour_kept(results, held.label_maps("garment_mask"), held.captions())
    columns = [results[m] for m in (PHOTO, STYLED, INV_PLAIN, INV_STYLED, DETAIL, CEILING)] + [truths]
    return StageResult(
        task="style",
        title="Style LoRA: photo -> illustration translation on FashionSynth",
        summary=style_summary(lora_cfg, len(held.names), raw, vae, colour),
        tables=[*score_tables(scores, truths, len(heldout_names(ctx.data))),
                Table(f"garment colours kept ({len(held.names)} held-out photos): RGB distance (0-255) of the mean colour "
                      "inside the true garment mask, output vs photo (lower is better; means)",
                      [{"images": method, "garment colour error vs the photo": float(values.mean())}
                       for method, values in colour.items()])],
        checks=style_checks(raw, vae, colour),
        figures=[Figure("held-out photo / SDEdit with the LoRA (recipe) / inversion without the LoRA / inversion with the LoRA / "
                        "with restored detail / true illustration through the VAE / true illustration",
                        ctx.out / "style" / "translations.png",
                        grid=[[column[i] for column in columns] for i in spread(range(len(held.names)), GRID_ROWS)]),
                 Figure("text-to-image with the LoRA (training sample)",
                        lora.parent / "samples" / f"step-{lora_cfg.train.max_steps:07d}.png"),
                 Figure("style LoRA training loss", lora.parent / "loss.png")],
        config={"style_lora": lora_cfg,
                "translate": {"sdedit": TRANSLATE, "inversion": INVERT, "prompt": PREFIX + "<photo caption>", "source_prompt": ""}},
    )
