"""Sampling the try-on network: a person wearing a garment (try-on) or a garment designed from a sketch and a caption.

Per batch: the masked person, the DensePose image and the control image (garment photo or sketch) go through the VAE
once (posterior means), the mask is max-pooled to the latent grid (a cell is generated when any of its pixels is),
the captions through the text encoder once. The garment encoder then runs once per image ("garment" input, whose
features do not depend on the step) or once per step ("noisy" input, StableVITON's, which reads the noisy latent).
With `keep_unmasked` (the default) the cells outside the mask are the masked person's latent noised to each step's
level (blended latents), and its pixels outside the mask are pasted back at the end (StableVITON's --repaint), so the
person outside the masked region is kept as it was. Classifier-free guidance (design: the caption against the empty
prompt, the same control image in both branches) runs both branches in one batched call when --guidance-scale is not
1; garment guidance (--garment-guidance) adds a call without the control image. Each image draws its noise from its
own seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from atelier.diffusion.encode import encode_images, encode_prompts
from atelier.diffusion.sampling import (
    SchedulerName,
    Seeds,
    check_range,
    check_steps,
    decode_latents,
    denoise,
    image_generators,
    make_scheduler,
    randn_per_image,
)
from atelier.methods.tryon.model import TryOnModel
from atelier.utils.images import tensor_to_pil


@dataclass
class Conditions:
    """A batch's conditions at the latent grid: masked person, mask, DensePose and control latents."""

    agnostic: torch.Tensor
    mask: torch.Tensor
    densepose: torch.Tensor
    control: torch.Tensor

    def unet_input(self, noisy: torch.Tensor) -> torch.Tensor:
        return torch.cat([noisy, self.agnostic.to(noisy.dtype), self.mask.to(noisy.dtype), self.densepose.to(noisy.dtype)], dim=1)

    def repeat(self, times: int) -> "Conditions":
        return Conditions(*(torch.cat([x] * times) for x in (self.agnostic, self.mask, self.densepose, self.control)))


def latent_mask(mask: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) pixel mask -> (B, 1, h, w): 1 where any pixel of the cell is set."""
    return (F.adaptive_max_pool2d(mask.float(), latent_hw) > 0.5).float()


def encode_conditions(vae, agnostic: torch.Tensor, mask: torch.Tensor, densepose: torch.Tensor, control: torch.Tensor,
                      latent_hw: tuple[int, int]) -> Conditions:
    """The VAE posterior means of the three images (one call) and the mask at the latent grid."""
    count = len(agnostic)
    means, _ = encode_images(vae, torch.cat([agnostic, densepose, control]))
    return Conditions(means[:count], latent_mask(mask, latent_hw).to(means.device), means[count : 2 * count], means[2 * count :])


def garment_predictor(model: TryOnModel, cond: Conditions, context: torch.Tensor, uncond: torch.Tensor | None,
                      guidance_scale: float, garment_guidance: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """predict_noise(latents, t) for `denoise`: the garment features computed once when they do not depend on the
    step, classifier-free guidance over the text when `uncond` is given and the scale is not 1, and guidance over the
    garment when `garment_guidance` is not 1: eps = eps_without + g (eps_with - eps_without), "without" being the
    network given no garment (zero cross-attention skipped, or no reference tokens: what garment dropout trains)."""
    net = model.net
    dtype = next(net.unet.parameters()).dtype
    guided = uncond is not None and guidance_scale != 1.0
    if guided:
        cond, context = cond.repeat(2), torch.cat([uncond, context])
    cond = Conditions(*(x.to(dtype) for x in (cond.agnostic, cond.mask, cond.densepose, cond.control)))
    context = context.to(dtype)
    fixed = net.encode_control(cond.control, context) if net.cfg.garment_input == "garment" else None

    def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        latents = torch.cat([latents] * 2) if guided else latents
        sample = cond.unet_input(latents.to(dtype))
        garment = fixed if fixed is not None else net.encode_control(cond.control, context, t, sample)
        eps = net(sample, t, context, garment).sample.float()
        if guided:
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        if garment_guidance == 1.0:
            return eps
        half = slice(len(latents) // 2, None) if guided else slice(None)  # the text-conditioned rows
        without = net(sample[half], t, context[half], None).sample.float()
        return without + garment_guidance * (eps - without)

    return predict


@torch.no_grad()
def generate(model: TryOnModel, agnostic: torch.Tensor, mask: torch.Tensor, densepose: torch.Tensor, control: torch.Tensor,
             captions: list[str] | None = None, *, steps: int = 50, scheduler: SchedulerName = "ddim",
             guidance_scale: float = 1.0, seed: Seeds = 0, show_progress: bool = True,
             keep_unmasked: bool = True, garment_guidance: float = 1.0) -> list[Image.Image]:
    """One image per row of the batch (images (B, 3, H, W) in [-1, 1], mask (B, 1, H, W) in {0, 1}); `captions`:
    one per row (design), None or empty strings for try-on. `seed`: an int S seeds row i with S + i.
    `keep_unmasked`: the latent cells outside the mask are the masked person's at every step (blended latents) and
    its pixels outside the mask are pasted back at the end, so only the masked region is drawn; off, the network
    draws every pixel (StableVITON's sampling without --repaint)."""
    check_steps(steps)
    check_range({"--guidance-scale": guidance_scale, "--garment-guidance": garment_guidance})
    count = len(agnostic)
    captions = list(captions) if captions is not None else [""] * count
    if len(captions) != count:
        raise ValueError(f"got {len(captions)} captions for {count} images; pass one per image")
    param = next(model.net.parameters())
    device = param.device
    latent_hw = model.latent_hw
    if tuple(agnostic.shape[-2:]) != tuple(model.config.image_size):
        raise ValueError(f"images of size {tuple(agnostic.shape[-2:])}: the model works at {tuple(model.config.image_size)} (H, W)")
    generators = image_generators(seed, count, device)
    cond = encode_conditions(model.vae, agnostic, mask, densepose, control, latent_hw)
    context = encode_prompts(model.tokenizer, model.text_encoder, captions, device)
    uncond = encode_prompts(model.tokenizer, model.text_encoder, [""] * count, device) if any(captions) else None
    sampler = make_scheduler(scheduler, model.scheduler.config)
    sampler.set_timesteps(steps, device=device)
    latents = randn_per_image((count, 4, *latent_hw), generators, device) * sampler.init_noise_sigma
    predict = garment_predictor(model, cond, context, uncond, guidance_scale, garment_guidance)
    known = (cond.agnostic, cond.mask, randn_per_image(latents.shape, generators, device)) if keep_unmasked else None
    latents = denoise(predict, sampler, latents, sampler.timesteps, generators, show_progress, known=known)
    images = decode_latents(model.vae, latents)
    if keep_unmasked:  # StableVITON's --repaint: the person's own pixels outside the mask
        region = mask.to(images.device, images.dtype)
        images = region * images + (1 - region) * agnostic.to(images.device, images.dtype)
    return [tensor_to_pil(image) for image in images]
