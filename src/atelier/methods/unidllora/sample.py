"""Uni-DlLoRA (Liao et al. 2024) inference: img2img with Uni-adapter residuals and the illustration LoRA.

The paper's sampling: SD 1.5 img2img at 512 px, DDPM 50 steps, strength 0.7 (so 35 run), guidance 5, empty
prompt; the Uni-adapter's features are computed once from the photo and its sketch and added to the down-block
residuals at every step, on both halves of the guidance batch (as diffusers' adapter pipelines and the released
pipeline do); only the illustration LoRA is active. With equal prompt and negative prompt (the paper's empty
prompt) both halves are the same computation, so guidance cannot change the result: the UNet then runs once per
step instead of twice (identical up to float rounding). Everything after the adapter features is the style
pipeline's SDEdit translation (`atelier.methods.style.sample.translate`) run on the UNet with the residuals bound.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from atelier.diffusion.components import SDComponents
from atelier.diffusion.sampling import SchedulerName, Seeds
from atelier.diffusion.speed import SpeedConfig, apply_speed, cast
from atelier.errors import UserError
from atelier.methods.style.sample import translate
from atelier.methods.unidllora.uni_adapter import ResidualUNet, UniAdapter, branch_weights

logger = logging.getLogger(__name__)

PAPER = {"strength": 0.7, "steps": 50, "guidance_scale": 5.0, "prompt": "", "scheduler": "ddpm", "size": 512}


@dataclass
class Illustrator:
    """A base model with the dual LoRA loaded into its UNet, and the Uni-adapter with its sketch extractor."""

    components: SDComponents
    uni_adapter: UniAdapter
    fused_lora_weights: dict[str, float] | None = None  # the domain weights baked into the UNet (SpeedConfig.fuse_lora)


@dataclass
class IllustrateOutput:
    images: list[Image.Image]
    latents: torch.Tensor
    sketches: torch.Tensor  # (B, 1, H, W) in [0, 1]: what the sketch adapter saw


def _sketch_settings(checkpoint: Path):
    """The checkpoint's sketch extractor: sketch.json (atelier), else pidnet/ (the released layout)."""
    from atelier.config import from_dict
    from atelier.methods.unidllora.sketch import PIDINET_FOLDER, SketchSettings

    if (checkpoint / "sketch.json").is_file():
        settings = from_dict(SketchSettings, json.loads((checkpoint / "sketch.json").read_text()), where="sketch.json")
        if settings.pidinet_weights and not Path(settings.pidinet_weights).is_absolute():
            settings.pidinet_weights = str(checkpoint / settings.pidinet_weights)
        return settings
    if (checkpoint / PIDINET_FOLDER).is_dir():
        return SketchSettings(extractor="pidinet", pidinet_weights=str(checkpoint / PIDINET_FOLDER))
    raise UserError(f"--checkpoint {checkpoint}: no sketch.json or {PIDINET_FOLDER}/ says how its sketches were made; "
                    "pass --sketch xdog or --sketch PATH/table5_pidinet.pth")


def _base_of(checkpoint: Path) -> str:
    """model.base from the checkpoint's config.yaml (atelier training runs save it)."""
    import yaml

    config = checkpoint / "config.yaml"
    base = (yaml.safe_load(config.read_text()) or {}).get("model", {}).get("base") if config.is_file() else None
    if not base:
        raise UserError(f"--checkpoint {checkpoint} names no base model (no config.yaml with model.base); pass --model, "
                        "e.g. --model /models/stable-diffusion-v1-5")
    return str(base)


def load_illustrator(checkpoint: str | os.PathLike, base: str | None = None, lora_weights: dict[str, float] | None = None,
                     sketch=None, device: str | torch.device | None = None, speed: SpeedConfig | None = None) -> Illustrator:
    """Base model + dual LoRA + Uni-adapter + sketch extractor from an atelier run's final/ or the released checkpoint,
    made fast by `speed` (default `SpeedConfig()`; with its fuse_lora the domain weights are fixed at `lora_weights`)."""
    from atelier.diffusion.components import freeze, load_components
    from atelier.methods.unidllora.dual_lora import PAPER_WEIGHTS, load_dual_lora
    from atelier.methods.unidllora.release import is_released_checkpoint, load_released_duallora
    from atelier.methods.unidllora.sketch import make_sketcher
    from atelier.methods.unidllora.uni_adapter import load_uni_adapter

    checkpoint = Path(checkpoint).expanduser()
    if not checkpoint.is_dir():
        raise UserError(f"--checkpoint {checkpoint} is not a folder; pass a dual-lora run's final/ or the released checkpoint")
    components = load_components(base or _base_of(checkpoint))
    freeze(components.unet, components.vae, components.text_encoder)
    sketcher = make_sketcher(sketch or _sketch_settings(checkpoint))
    adapter = load_uni_adapter(checkpoint, components.unet, components.latent_scale).eval().requires_grad_(False)
    if (checkpoint / "lora").is_dir():
        weights = lora_weights if lora_weights is not None else PAPER_WEIGHTS
        load_dual_lora(components.unet, checkpoint / "lora", weights)
    elif is_released_checkpoint(checkpoint):
        weights = lora_weights or {"illustration": 1.0}
        load_released_duallora(components.unet, checkpoint)  # the weights are set below
    else:
        raise UserError(f"--checkpoint {checkpoint}: no lora/ (atelier) or custom_duallora/duallora.bin (released)")
    model = Illustrator(components, UniAdapter(adapter, sketcher))
    return apply_speed_to_illustrator(model, speed or SpeedConfig(), weights, device or ("cuda" if torch.cuda.is_available() else "cpu"))


def apply_speed_to_illustrator(model: Illustrator, speed: SpeedConfig, lora_weights: dict[str, float],
                               device: str | torch.device | None = None) -> Illustrator:
    """Set the LoRA domain weights and apply `speed` in place (diffusion.speed); with speed.fuse_lora the weights are
    fused in and recorded, and `illustrate` refuses other weights from then on."""
    from atelier.methods.unidllora.dual_lora import set_domain_weights

    set_domain_weights(model.components.unet, lora_weights)
    apply_speed(model.components, speed, device)
    param = next(model.components.unet.parameters())
    model.uni_adapter.adapter.to(param.device)
    cast(model.uni_adapter.adapter, param.dtype)
    model.fused_lora_weights = _all_domains(lora_weights) if speed.fuse_lora else None
    return model


def _all_domains(weights: dict[str, float]) -> dict[str, float]:
    """Domain weights with every domain named (0 for those left out), for comparing two settings."""
    from atelier.methods.unidllora.dual_lora import DOMAINS

    return {domain: float(weights.get(domain, 0.0)) for domain in DOMAINS}


@torch.no_grad()
def illustrate(model: Illustrator, images: torch.Tensor, *, prompt: str = "", negative_prompt: str = "",
               strength: float = 0.7, steps: int = 50, guidance_scale: float = 5.0, adapter_scale: float = 1.0,
               adapter_weights: list[float] | None = None, lora_weights: dict[str, float] | None = None, seed: Seeds = 0,
               scheduler: SchedulerName = "ddpm", show_progress: bool = True) -> IllustrateOutput:
    """Translate (B, 3, H, W) photos in [-1, 1]: validate -> LoRA weights -> adapter features -> SDEdit with residuals.

    `seed`: an int S seeds photo i with S + i, a sequence gives each photo's seed (as `style.translate`).
    """
    from atelier.methods.unidllora.dual_lora import set_domain_weights

    # 1. validate: the adapter's weights (the size is checked by the adapter and the translation)
    weights = branch_weights(adapter_scale, adapter_weights)
    unet = model.components.unet
    # 2. LoRA domain weights (None keeps what the model was loaded with; a fused LoRA cannot change them)
    if lora_weights is not None and model.fused_lora_weights is not None:
        if _all_domains(lora_weights) != model.fused_lora_weights:
            raise UserError(f"lora_weights {_all_domains(lora_weights)}: this model's LoRA was fused in at load with "
                            f"{model.fused_lora_weights}; pass the weights when loading (--lora-weights), or load with "
                            "SpeedConfig(fuse_lora=False) to switch them per call")
    elif lora_weights is not None:
        set_domain_weights(unet, lora_weights)
    # 3. encode: the photo and its sketch through the Uni-adapter, once for all steps
    rgb, sketches = model.uni_adapter.inputs(images)
    dtype = next(unet.parameters()).dtype
    features = [feature.to(dtype) for feature in model.uni_adapter.features(rgb, sketches, weights)]
    # 4-7. timesteps -> latents -> denoise (residuals bound to the UNet) -> decode: the SDEdit translation
    bound = dataclasses.replace(model.components, unet=ResidualUNet(unet, features))
    guidance = 1.0 if prompt == negative_prompt else guidance_scale  # both halves identical: guidance is a no-op
    out = translate(bound, images, [prompt] * len(images), strength=strength, steps=steps, guidance_scale=guidance,
                    negative_prompt=negative_prompt, seed=seed, scheduler=scheduler, show_progress=show_progress)
    return IllustrateOutput(out.images, out.latents, sketches.float().cpu())
