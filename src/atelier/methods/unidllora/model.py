"""Uni-DlLoRA's model (Liao et al. 2024) as a unit: base + dual LoRA + Uni-adapter + sketch extractor, loaded from an
atelier run or the released checkpoint, and its speed set-up."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from atelier.diffusion.components import SDComponents
from atelier.diffusion.speed import SpeedConfig, apply_speed, cast
from atelier.errors import UserError
from atelier.methods.unidllora.uni_adapter import UniAdapter


@dataclass
class Illustrator:
    """A base model with the dual LoRA loaded into its UNet, and the Uni-adapter with its sketch extractor."""

    components: SDComponents
    uni_adapter: UniAdapter
    fused_lora_weights: dict[str, float] | None = None  # the domain weights baked into the UNet (SpeedConfig.fuse_lora)


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


EXPECTED = ("a dual-lora run's final/ (lora/, adapter/, adapter_1/, sketch.json) or the released Uni-DlLoRA folder "
            "(custom_duallora/duallora.bin, adapter/, adapter_1/, pidnet/)")


def check_checkpoint(checkpoint: Path) -> None:
    """UserError, before anything loads, when CHECKPOINT is not an illustration checkpoint: it names what the folder
    is instead (another task's run, a run folder instead of its final/, a base model, a LoRA, ...) and what to pass."""
    from atelier.methods.unidllora.release import is_released_checkpoint

    if not checkpoint.is_dir():
        raise UserError(f"--checkpoint {checkpoint} is not a folder; pass {EXPECTED}")
    if (checkpoint / "lora").is_dir() or is_released_checkpoint(checkpoint):
        return
    raise UserError(f"--checkpoint {checkpoint} is {describe_folder(checkpoint)}, not an illustration checkpoint; "
                    f"pass {EXPECTED}")


def describe_folder(folder: Path) -> str:
    """What a folder that is not an illustration checkpoint holds, in words, with the command that takes it."""
    from atelier.config import read_yaml

    if (folder / "final" / "lora").is_dir():
        return f"a dual-lora training run (its checkpoint is {folder / 'final'})"
    if (folder / "final").is_dir():
        return f"a training run folder of another task ({describe_folder(folder / 'final')} in final/)"
    task = None
    if (folder / "config.yaml").is_file():
        try:
            task = read_yaml(folder / "config.yaml").get("task")
        except (ValueError, OSError):  # UserError included: an unreadable config only leaves the task unknown
            task = None
    if (folder / "cfld.yaml").is_file():
        return "a pose-transfer (CFLD) model, for `atelier pose-transfer --checkpoint`"
    if (folder / "pytorch_lora_weights.safetensors").is_file() or (folder / "adapter_config.json").is_file():
        return f"a style LoRA{f' (a {task} run)' if task else ''}, for `atelier translate/generate --lora`"
    if (folder / "model_index.json").is_file() or (folder / "unet").is_dir():
        return "a base model, for --model"
    if task:
        return f"the output of a `{task}` training run"
    return "an empty folder" if not any(folder.iterdir()) else "a folder with neither lora/ nor custom_duallora/"


def _base_of(checkpoint: Path) -> str:
    """model.base from the checkpoint's config.yaml (atelier training runs save it)."""
    from atelier.config import read_yaml

    config = checkpoint / "config.yaml"
    base = (read_yaml(config).get("model") or {}).get("base") if config.is_file() else None
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
    from atelier.methods.unidllora.release import load_released_duallora
    from atelier.methods.unidllora.sketch import make_sketcher
    from atelier.methods.unidllora.uni_adapter import load_uni_adapter

    checkpoint = Path(checkpoint).expanduser()
    check_checkpoint(checkpoint)
    components = load_components(base or _base_of(checkpoint))
    freeze(components.unet, components.vae, components.text_encoder)
    sketcher = make_sketcher(sketch or _sketch_settings(checkpoint))
    adapter = load_uni_adapter(checkpoint, components.unet, components.latent_scale).eval().requires_grad_(False)
    if (checkpoint / "lora").is_dir():
        weights = lora_weights if lora_weights is not None else PAPER_WEIGHTS
        load_dual_lora(components.unet, checkpoint / "lora", weights)
    else:  # the released layout (check_checkpoint admits nothing else)
        weights = lora_weights or {"illustration": 1.0}
        load_released_duallora(components.unet, checkpoint)  # the weights are set below
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
    model.fused_lora_weights = all_domains(lora_weights) if speed.fuse_lora else None
    return model


def all_domains(weights: dict[str, float]) -> dict[str, float]:
    """Domain weights with every domain named (0 for those left out), for comparing two settings."""
    from atelier.methods.unidllora.dual_lora import DOMAINS

    return {domain: float(weights.get(domain, 0.0)) for domain in DOMAINS}
