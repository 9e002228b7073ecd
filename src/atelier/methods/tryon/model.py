"""The try-on model as a unit: its typed config, build from a base, save, load, speed set-up.

atelier's try-on folder (a training run's `final/`): `tryon.yaml` (this config), `tryon.safetensors` (the garment
encoder and the zero cross-attention), and the diffusers folders `unet/` (13 input channels), `vae/`, `scheduler/`,
`text_encoder/`, `tokenizer/` (the text context: the captions in design mode, the empty prompt in try-on mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from atelier.config import from_dict, read_yaml, save_yaml
from atelier.diffusion.components import SDComponents, vae_scale
from atelier.diffusion.speed import SpeedConfig, apply_speed_to_unet, apply_speed_to_vae, cast, set_attention
from atelier.errors import UserError
from atelier.methods.tryon.network import TryOnNet, TryOnNetConfig

MODEL_CONFIG, WEIGHTS = "tryon.yaml", "tryon.safetensors"
Mode = Literal["tryon", "design"]


@dataclass
class TryOnModelConfig:
    """What rebuilds a trained model: the network, what it was trained for, and the size it works at (H, W)."""

    net: TryOnNetConfig = field(default_factory=TryOnNetConfig)
    mode: Mode = "tryon"  # tryon: the control image is the garment photo; design: the garment sketch, with a caption
    image_size: tuple[int, int] = (512, 384)


@dataclass
class TryOnModel:
    """A try-on network ready to sample: the network (UNet inside), VAE, scheduler, text encoder, tokenizer, config."""

    net: TryOnNet
    vae: Any
    scheduler: Any
    text_encoder: Any
    tokenizer: Any
    config: TryOnModelConfig

    @property
    def latent_scale(self) -> int:
        return vae_scale(self.vae)

    @property
    def latent_hw(self) -> tuple[int, int]:
        return latent_grid(self.config.image_size, self.latent_scale)


def latent_grid(image_size: tuple[int, int], latent_scale: int) -> tuple[int, int]:
    """The latent grid of an image size; UserError unless both sides are multiples of the VAE's downsampling."""
    height, width = image_size
    if height % latent_scale or width % latent_scale:
        raise UserError(f"image size {height}x{width} (HxW) must be a multiple of {latent_scale}, the VAE's downsampling")
    return height // latent_scale, width // latent_scale


def build_model(config: TryOnModelConfig, components: SDComponents) -> TryOnModel:
    """A fresh try-on model on a base's components (text-to-image or inpainting UNet; widened to 13 channels)."""
    net = TryOnNet(config.net, components.unet)
    return TryOnModel(net, components.vae, components.scheduler, components.text_encoder, components.tokenizer, config)


def checkpoint_folder(checkpoint: str | Path) -> Path:
    """The folder holding a try-on model: RUN/final or the folder itself; UserError naming what was expected."""
    folder = Path(checkpoint)
    if (folder / "final" / MODEL_CONFIG).is_file():
        folder = folder / "final"
    if not (folder / MODEL_CONFIG).is_file():
        raise UserError(f"--checkpoint {checkpoint}: expected a tryon or garment-design training run (RUN/ or "
                        f"RUN/final/ with {MODEL_CONFIG})")
    return folder


def read_model_config(checkpoint: str | Path) -> TryOnModelConfig:
    """A checkpoint's config alone (mode and size), without loading its weights."""
    return from_dict(TryOnModelConfig, read_yaml(checkpoint_folder(checkpoint) / MODEL_CONFIG), where=MODEL_CONFIG)


def trained_garment_guidance(checkpoint: str | Path) -> float:
    """The garment guidance a run's own samples used (its config.yaml's sample.garment_guidance), 1 (off) when the
    folder has no such setting."""
    path = checkpoint_folder(checkpoint) / "config.yaml"
    value = (read_yaml(path).get("sample") or {}).get("garment_guidance", 1.0) if path.is_file() else 1.0
    return float(value) if isinstance(value, (int, float)) else 1.0


def load_tryon_model(checkpoint: str | Path, device: str | torch.device | None = None,
                     speed: SpeedConfig | None = None) -> TryOnModel:
    """A trained try-on model (run or run/final) in eval mode on `device`, made fast by `speed` (default SpeedConfig())."""
    from atelier.diffusion.components import freeze, load_components
    from atelier.weights import load_module_strict, load_state_dict

    folder = checkpoint_folder(checkpoint)
    config = read_model_config(folder)
    model = build_model(config, load_components(folder))
    state = load_state_dict(folder / WEIGHTS)
    unet = {k: v for k, v in model.net.state_dict().items() if k.startswith("unet.")}
    load_module_strict(model.net, {**state, **unet}, str(folder / WEIGHTS), "this try-on configuration")
    freeze(model.net, model.vae, model.text_encoder)
    return apply_speed_to_tryon_model(model, speed or SpeedConfig(), device or ("cuda" if torch.cuda.is_available() else "cpu"))


def apply_speed_to_tryon_model(model: TryOnModel, speed: SpeedConfig, device: str | torch.device) -> TryOnModel:
    """Apply `speed` in place: the garment encoder's attention, the UNet (the garment processors are kept), VAE, text encoder."""
    device = torch.device(device)
    set_attention(model.net.garment_encoder, speed.sdpa, speed.fuse_qkv)
    model.net.to(device)
    cast(model.net, speed.torch_dtype(device))
    apply_speed_to_unet(model.net.unet, speed, device)
    apply_speed_to_vae(model.vae, speed, device)
    model.text_encoder.to(device)
    return model


def save_tryon_model(model: TryOnModel, folder: str | Path) -> Path:
    """Write atelier's try-on folder (see the module docstring)."""
    from atelier.utils.io import save_safetensors

    folder = Path(folder)
    SDComponents(model.net.unet, model.vae, model.text_encoder, model.tokenizer, model.scheduler).save(folder)
    save_safetensors({k: v.detach().contiguous() for k, v in model.net.extra_state_dict().items()}, folder / WEIGHTS)
    save_yaml(model.config, folder / MODEL_CONFIG)
    return folder
