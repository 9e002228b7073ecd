"""Text-to-image sampling with any SD 1.x components (optionally with a LoRA already applied to the UNet)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from atelier.models.base import SDComponents
from atelier.pipelines.common import SchedulerName, classifier_free_guidance, decode_latents, denoise, make_scheduler
from atelier.models.encode import encode_prompts
from atelier.utils.images import tensor_to_pil


@dataclass
class Text2ImgOutput:
    images: list[Image.Image]
    latents: torch.Tensor


@torch.no_grad()
def generate(components: SDComponents, prompts: list[str], *, size_hw: tuple[int, int], steps: int = 30,
             guidance_scale: float = 7.5, negative_prompt: str = "", seed: int = 0, scheduler: SchedulerName = "ddim",
             show_progress: bool = True) -> Text2ImgOutput:
    """Sample one image per prompt: validate -> encode -> timesteps -> latents -> denoise -> decode."""
    # 1. validate
    height, width = size_hw
    scale = components.latent_scale
    if height % scale or width % scale:
        raise ValueError(f"size {width}x{height} must be a multiple of {scale} (the VAE's downsampling)")
    device = next(components.unet.parameters()).device
    # 2. encode
    cond = encode_prompts(components.tokenizer, components.text_encoder, prompts, device)
    uncond = encode_prompts(components.tokenizer, components.text_encoder, [negative_prompt], device).expand_as(cond)
    # 3. timesteps
    sampler = make_scheduler(scheduler, components.scheduler.config)
    sampler.set_timesteps(steps, device=device)
    # 4. latents
    generator = torch.Generator(device=device).manual_seed(seed)
    channels = components.unet.config.in_channels
    latents = torch.randn((len(prompts), channels, height // scale, width // scale), generator=generator, device=device)
    latents = latents * sampler.init_noise_sigma
    # 5. denoise
    predict = classifier_free_guidance(components.unet, cond, uncond, guidance_scale)
    latents = denoise(predict, sampler, latents, sampler.timesteps, generator, show_progress)
    # 6. decode
    images = decode_latents(components.vae, latents)
    return Text2ImgOutput([tensor_to_pil(image) for image in images], latents)
