"""Image-to-image sampling for every method: SDEdit (Meng et al. 2021) or DDIM inversion, plus IP-Adapter image
conditioning; the style method's translation and Uni-DlLoRA's illustration both run it.

The Diffusion-LoRA-Style-Transfer recipe (docs/style.md): the photo's latents are noised to the `strength`
point of the schedule (the scheduler's `add_noise`; `img2img_timesteps` picks the last `strength` share of the steps,
so strength 0 returns the input through the VAE and 1 ignores it) and denoised by the UNet with the style LoRA,
prompted with the LoRA's identifier; an image adapter fed the same photo (`image_cond_scale`) keeps its details.
The image's latent is the VAE posterior mean (deterministic), so only the added noise depends on the seed, and each
image draws that noise from its own seed (`diffusion.sampling.image_generators`): its result does not depend on the batch.

Two options beyond the recipe, both measured on FashionSynth (the demo's style stage):
- `inversion`: instead of random noise, the starting point is the DDIM inversion of the image by the base model (LoRA
  and image adapter off, `source_prompt`), then DDIM sampling with the LoRA: without the LoRA this returns the input,
  so what changes is what the LoRA changes, and the person and garment keep their layout at any strength.
- `restore_detail`: adds back what the VAE loses of the input (input - decode(encode(input))), so fine detail the
  latent grid cannot hold (prints, edges) survives; the style change is what the diffusion changed in decoded space.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from PIL import Image

from atelier.diffusion.components import SDComponents
from atelier.diffusion.encode import encode_images, encode_prompts
from atelier.diffusion.image_adapter import ImageAdapter
from atelier.diffusion.sampling import (
    SchedulerName,
    Seeds,
    check_range,
    classifier_free_guidance,
    ddim_invert,
    decode_latents,
    denoise,
    image_generators,
    img2img_timesteps,
    make_scheduler,
    randn_per_image,
)
from atelier.errors import UserError
from atelier.utils.images import tensor_to_pil

logger = logging.getLogger(__name__)


@dataclass
class TranslateOutput:
    images: list[Image.Image]
    latents: torch.Tensor
    start: torch.Tensor  # the latents the denoising started from (with `inversion`: what the inversion reached)


@torch.no_grad()
def translate(components: SDComponents, images: torch.Tensor, prompts: list[str], *, strength: float = 0.5,
              steps: int = 100, guidance_scale: float = 7.5, negative_prompt: str = "",
              image_adapter: ImageAdapter | None = None, image_cond_scale: float = 0.3, seed: Seeds = 0,
              scheduler: SchedulerName = "ddim", inversion: bool = False, source_prompt: str = "",
              restore_detail: bool = False, inverted: torch.Tensor | None = None,
              show_progress: bool = True) -> TranslateOutput:
    """Translate (B, 3, H, W) images in [-1, 1]: validate -> timesteps -> encode -> latents -> denoise -> decode.

    `seed`: an int S seeds image i with S + i, a sequence gives each image's seed; an image's result depends only on
    its own seed, whatever the batch it is translated in. `inversion` (DDIM only; needs the LoRA unfused) and
    `restore_detail`: see the module docstring. `inverted`: the `start` of an earlier `inversion` call on the same
    images, steps, strength and source prompt (the inversion runs the base model alone, so it does not depend on the
    LoRA, prompts or guidance): reused instead of inverting again.
    """
    # 1. validate
    height, width = images.shape[-2:]
    scale = components.latent_scale
    if height % scale or width % scale:
        raise ValueError(f"image size {width}x{height} must be a multiple of {scale} (the VAE's downsampling)")
    if len(prompts) != len(images):
        raise ValueError(f"got {len(prompts)} prompts for {len(images)} images; pass one prompt per image")
    check_range({"--guidance-scale": guidance_scale})
    check_range({"--image-cond-scale": image_cond_scale}, why=" (0 ignores the image adapter)")
    if inversion and scheduler != "ddim":
        raise UserError(f"--inversion with --scheduler {scheduler}: DDIM inversion needs --scheduler ddim")
    if inverted is not None and (not inversion or inverted.shape[0] != len(images)):
        raise ValueError("`inverted` is an earlier inversion's start latents, one per image: pass it with inversion=True")
    unet = components.unet
    device = next(unet.parameters()).device
    generators = image_generators(seed, len(images), device)
    # 2. timesteps: the last `strength` share of the schedule (SDEdit)
    sampler = make_scheduler(scheduler, components.scheduler.config)
    timesteps = img2img_timesteps(sampler, steps, strength, device)
    # 3. encode: prompts, the images' latents and (with an adapter) their image embeddings; zeros are "no image"
    #    (the adapter's scale is set at the start of step 5, after an inversion, which runs without it)
    cond = encode_prompts(components.tokenizer, components.text_encoder, prompts, device)
    uncond = encode_prompts(components.tokenizer, components.text_encoder, [negative_prompt], device).expand_as(cond)
    init = encode_images(components.vae, images.to(device))[0].float()  # the sampler works in fp32
    image_embeds = None
    if image_adapter is not None:
        image_adapter.set_scale(0.0)  # exactly the UNet without the adapter, for an inversion
        embeds = image_adapter.embed(images)
        image_embeds = (embeds, torch.zeros_like(embeds))
    # 4. latents: the images' latents noised to the first kept timestep, each image's noise from its own generator,
    #    or (inversion) carried there by the base model's DDIM inversion
    latents = init
    if len(timesteps) and inverted is not None:
        latents = inverted.to(device=device, dtype=init.dtype)
    elif len(timesteps) and inversion:
        no_image = None if image_embeds is None else (image_embeds[1], image_embeds[1])  # zeros: adapter at scale 0
        latents = invert_images(components, init, [source_prompt] * len(init), timesteps, steps, no_image, show_progress)
    elif len(timesteps):
        noise = randn_per_image(init.shape, generators, device, init.dtype)
        latents = sampler.add_noise(init, noise, timesteps[:1].repeat(len(init)))
    start = latents
    # 5. denoise
    if image_adapter is not None:
        image_adapter.set_scale(image_cond_scale)
    predict = classifier_free_guidance(unet, cond, uncond, guidance_scale, image_embeds)
    latents = denoise(predict, sampler, latents, timesteps, generators, show_progress)
    # 6. decode (plus, with restore_detail, what the VAE loses of the input)
    decoded = with_lost_detail(components.vae, latents, images, init) if restore_detail else decode_latents(components.vae, latents)
    return TranslateOutput([tensor_to_pil(image) for image in decoded], latents, start)


@torch.no_grad()
def with_lost_detail(vae, latents: torch.Tensor, images: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
    """`restore_detail`: `latents` decoded plus what the VAE loses of `images` (images - decode(encode(images)), `init`
    being their latents when already encoded), clamped to [-1, 1]."""
    if init is None:
        init = encode_images(vae, images.to(latents.device))[0].float()
    decoded = decode_latents(vae, latents)
    return (decoded + images.to(decoded.device) - decode_latents(vae, init)).clamp(-1, 1)


def invert_images(components: SDComponents, init: torch.Tensor, source_prompts: list[str], timesteps: torch.Tensor,
                  steps: int, image_embeds: tuple[torch.Tensor, torch.Tensor] | None = None,
                  show_progress: bool = True) -> torch.Tensor:
    """DDIM inversion of image latents by the base model: LoRA bypassed (`lora_disabled`), no guidance, prompted with
    the source prompts. An attached image adapter must be at scale 0 (then it is exactly absent), fed `image_embeds`."""
    from atelier.diffusion.lora import lora_disabled

    with lora_disabled([components.unet, components.text_encoder]):
        source = encode_prompts(components.tokenizer, components.text_encoder, source_prompts, init.device)
        predict = classifier_free_guidance(components.unet, source, source, 1.0, image_embeds)
        return ddim_invert(predict, components.scheduler.config, init, timesteps, steps, show_progress)
