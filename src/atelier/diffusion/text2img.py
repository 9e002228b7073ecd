"""Text-to-image sampling with any SD 1.x components (optionally with a LoRA already applied to the UNet).

Each image draws its noise from its own seed (`diffusion.sampling.image_generators`), so it does not depend on the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from atelier.diffusion.components import SDComponents
from atelier.diffusion.encode import encode_prompts
from atelier.diffusion.sampling import (
    SchedulerName,
    Seeds,
    check_range,
    check_steps,
    classifier_free_guidance,
    decode_latents,
    denoise,
    image_generators,
    make_scheduler,
    randn_per_image,
)
from atelier.utils.images import tensor_to_pil


@dataclass
class Text2ImgOutput:
    images: list[Image.Image]
    latents: torch.Tensor


@torch.no_grad()
def generate(components: SDComponents, prompts: list[str], *, size_hw: tuple[int, int], steps: int = 30,
             guidance_scale: float = 7.5, negative_prompt: str = "", seed: Seeds = 0, scheduler: SchedulerName = "ddim",
             show_progress: bool = True) -> Text2ImgOutput:
    """Sample one image per prompt: validate -> encode -> timesteps -> latents -> denoise -> decode.

    `seed`: an int S seeds image i with S + i, a sequence gives each image's seed.
    """
    # 1. validate
    height, width = size_hw
    scale = components.latent_scale
    if height % scale or width % scale:
        raise ValueError(f"size {width}x{height} must be a multiple of {scale} (the VAE's downsampling)")
    check_steps(steps)
    check_range({"--guidance-scale": guidance_scale})
    device = next(components.unet.parameters()).device
    generators = image_generators(seed, len(prompts), device)
    # 2. encode
    cond = encode_prompts(components.tokenizer, components.text_encoder, prompts, device)
    uncond = encode_prompts(components.tokenizer, components.text_encoder, [negative_prompt], device).expand_as(cond)
    # 3. timesteps
    sampler = make_scheduler(scheduler, components.scheduler.config)
    sampler.set_timesteps(steps, device=device)
    # 4. latents
    channels = components.unet.config.in_channels
    latents = randn_per_image((len(prompts), channels, height // scale, width // scale), generators, device)
    latents = latents * sampler.init_noise_sigma
    # 5. denoise
    predict = classifier_free_guidance(components.unet, cond, uncond, guidance_scale)
    latents = denoise(predict, sampler, latents, sampler.timesteps, generators, show_progress)
    # 6. decode
    images = decode_latents(components.vae, latents)
    return Text2ImgOutput([tensor_to_pil(image) for image in images], latents)
