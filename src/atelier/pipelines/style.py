"""Style transfer with a style LoRA: SDEdit img2img (Meng et al. 2021) plus IP-Adapter image conditioning.

The Diffusion-LoRA-Style-Transfer recipe (REFERENCE section 1): the photo's latents are noised to the `strength`
point of the schedule (the scheduler's `add_noise`; `img2img_timesteps` picks the last `strength` share of the steps,
so strength 0 returns the input through the VAE and 1 ignores it) and denoised by the UNet with the style LoRA,
prompted with the LoRA's identifier; an image adapter fed the same photo (`image_cond_scale`) keeps its details.
The image's latent is the VAE posterior mean (deterministic), so only the added noise depends on the seed, and each
image draws that noise from its own seed (`pipelines.common.image_generators`): its result does not depend on the batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from PIL import Image

from atelier.errors import UserError
from atelier.models.adapters import ImageAdapter
from atelier.models.base import SDComponents
from atelier.models.encode import encode_images, encode_prompts
from atelier.models.speed import SpeedConfig, apply_speed, cast, set_encoder_attention
from atelier.pipelines.common import (SchedulerName, Seeds, classifier_free_guidance, decode_latents, denoise,
                                      image_generators, img2img_timesteps, make_scheduler, randn_per_image)
from atelier.utils.images import tensor_to_pil

logger = logging.getLogger(__name__)


@dataclass
class TranslateOutput:
    images: list[Image.Image]
    latents: torch.Tensor


def load_style_model(base: str, lora: str | None = None, lora_scale: float = 1.0, image_adapter: str | None = None,
                     device: str | torch.device | None = None,
                     speed: SpeedConfig | None = None) -> tuple[SDComponents, ImageAdapter | None]:
    """Base SD 1.x components with a style LoRA (diffusers or PEFT format) and an image adapter attached, made fast by
    `speed` (default `SpeedConfig()`: the LoRA fused in, bf16 on CUDA, ...; `SpeedConfig.plain()` is the reference)."""
    from atelier.models.adapters import load_image_adapter
    from atelier.models.base import freeze, load_components
    from atelier.models.lora import load_lora

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


@torch.no_grad()
def translate(components: SDComponents, images: torch.Tensor, prompts: list[str], *, strength: float = 0.5,
              steps: int = 100, guidance_scale: float = 7.5, negative_prompt: str = "",
              image_adapter: ImageAdapter | None = None, image_cond_scale: float = 0.3, seed: Seeds = 0,
              scheduler: SchedulerName = "ddim", show_progress: bool = True) -> TranslateOutput:
    """Translate (B, 3, H, W) images in [-1, 1]: validate -> timesteps -> encode -> latents -> denoise -> decode.

    `seed`: an int S seeds image i with S + i, a sequence gives each image's seed; an image's result depends only on
    its own seed, whatever the batch it is translated in.
    """
    # 1. validate
    height, width = images.shape[-2:]
    scale = components.latent_scale
    if height % scale or width % scale:
        raise ValueError(f"image size {width}x{height} must be a multiple of {scale} (the VAE's downsampling)")
    if len(prompts) != len(images):
        raise ValueError(f"got {len(prompts)} prompts for {len(images)} images; pass one prompt per image")
    if image_cond_scale < 0:
        raise UserError(f"--image-cond-scale {image_cond_scale}: expected a value >= 0 (0 ignores the image adapter)")
    unet = components.unet
    device = next(unet.parameters()).device
    generators = image_generators(seed, len(images), device)
    # 2. timesteps: the last `strength` share of the schedule (SDEdit)
    sampler = make_scheduler(scheduler, components.scheduler.config)
    timesteps = img2img_timesteps(sampler, steps, strength, device)
    # 3. encode: prompts, the images' latents and (with an adapter) their image embeddings; zeros are "no image"
    cond = encode_prompts(components.tokenizer, components.text_encoder, prompts, device)
    uncond = encode_prompts(components.tokenizer, components.text_encoder, [negative_prompt], device).expand_as(cond)
    init = encode_images(components.vae, images.to(device))[0].float()  # the sampler works in fp32
    image_embeds = None
    if image_adapter is not None:
        image_adapter.set_scale(image_cond_scale)
        embeds = image_adapter.embed(images)
        image_embeds = (embeds, torch.zeros_like(embeds))
    # 4. latents: the images' latents noised to the first kept timestep, each image's noise from its own generator
    latents = init
    if len(timesteps):
        noise = randn_per_image(init.shape, generators, device, init.dtype)
        latents = sampler.add_noise(init, noise, timesteps[:1].repeat(len(init)))
    # 5. denoise
    predict = classifier_free_guidance(unet, cond, uncond, guidance_scale, image_embeds)
    latents = denoise(predict, sampler, latents, timesteps, generators, show_progress)
    # 6. decode
    decoded = decode_latents(components.vae, latents)
    return TranslateOutput([tensor_to_pil(image) for image in decoded], latents)
