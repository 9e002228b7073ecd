"""The style method's model as a unit: base SD 1.x components + a style LoRA + an optional image adapter."""

from __future__ import annotations

import torch

from atelier.diffusion.components import SDComponents
from atelier.diffusion.image_adapter import ImageAdapter
from atelier.diffusion.speed import SpeedConfig, apply_speed, cast, set_encoder_attention


def load_style_model(base: str, lora: str | None = None, lora_scale: float = 1.0, image_adapter: str | None = None,
                     device: str | torch.device | None = None,
                     speed: SpeedConfig | None = None) -> tuple[SDComponents, ImageAdapter | None]:
    """Base SD 1.x components with a style LoRA (diffusers or PEFT format) and an image adapter attached, made fast by
    `speed` (default `SpeedConfig()`: the LoRA fused in, bf16 on CUDA, ...; `SpeedConfig.plain()` is the reference)."""
    from atelier.diffusion.components import freeze, load_components
    from atelier.diffusion.image_adapter import load_image_adapter
    from atelier.diffusion.lora import load_lora
    from atelier.diffusion.sampling import check_range

    check_range({"--lora-scale": lora_scale})
    speed = speed or SpeedConfig()
    components = load_components(base)
    freeze(components.unet, components.vae, components.text_encoder)
    if lora:
        load_lora(components.unet, components.text_encoder, lora, scale=lora_scale)
    adapter = load_image_adapter(image_adapter, components.unet) if image_adapter else None
    apply_speed(components, speed, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if adapter is not None:
        param = next(components.unet.parameters())
        set_encoder_attention(adapter.image_encoder, speed.sdpa)
        adapter.image_encoder.to(param.device)
        cast(adapter.image_encoder, param.dtype)
    return components, adapter
