"""Pose-guided person image synthesis with MCLD (Liu et al., CVPR 2025): a source person redrawn in a target's IUV.

As MCLD's release samples: the reference UNet runs once per image on the texture latent (its posterior mean); DDIM,
20 steps, eta 0, on the trained scheduler's config (v-prediction, zero terminal SNR, trailing spacing); classifier-free
guidance 3.5 between the conditioned branch and MCLDNet's unconditional one (every condition zeroed, no reference
features; the pose guider keeps the target's IUV unless `uncond_keeps_pose` is false), one UNet call per branch.
Each pair draws its noise from its own seed. Outputs are named as CFLD's (`data.pairs.output_name`, which `cfld.sample.output_name` re-exports), so
`atelier evaluate --protocol cfld` matches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from PIL import Image

from atelier.data.pairs import output_name
from atelier.diffusion.encode import encode_images
from atelier.diffusion.sampling import (
    Seeds,
    check_range,
    check_steps,
    decode_latents,
    denoise,
    image_generators,
    make_scheduler,
    randn_per_image,
)
from atelier.methods.mcld.model import MCLDModel, check_sizes
from atelier.utils.images import tensor_to_pil

__all__ = ["MCLDOutput", "output_name", "transfer", "transfer_pairs"]


@dataclass
class MCLDOutput:
    images: list[Image.Image]
    latents: torch.Tensor


@torch.no_grad()
def transfer(model: MCLDModel, source: torch.Tensor, texture: torch.Tensor, target_iuv: torch.Tensor,
             face: torch.Tensor, *, steps: int = 20, guidance_scale: float = 3.5, eta: float = 0.0, seed: Seeds = 0,
             show_progress: bool = True) -> MCLDOutput:
    """Redraw each source (B, 3, H, W) in [-1, 1] with its texture map (B, 3, Ht, Wt) in [-1, 1], target IUV image
    (B, 3, H, W) in [0, 1] and face embedding (B, E): one image per pair. `seed` as `diffusion.sampling.image_seeds`."""
    latent_hw = check_sizes(model.config, model.latent_scale)
    if not len(source) == len(texture) == len(target_iuv) == len(face):
        raise ValueError(f"got {len(source)} sources, {len(texture)} textures, {len(target_iuv)} IUV images and "
                         f"{len(face)} face embeddings; pass one of each per pair")
    check_steps(steps)
    check_range({"--guidance-scale": guidance_scale, "--eta": eta})
    net = model.net
    param = next(net.unet.parameters())
    device, dtype = param.device, param.dtype
    generators = image_generators(seed, len(source), device)
    # conditions: CLIP tokens, texture latent -> reference tokens (once), IUV, face
    source_clip = model.clip((source.to(device) + 1) / 2).to(device, dtype)
    texture_clip = model.clip((texture.to(device) + 1) / 2).to(device, dtype)
    texture_latent = encode_images(model.vae, texture.to(device))[0].to(device, dtype)
    reference = net.encode_reference(texture_latent, texture_clip)
    inputs = {"pose_iuv": target_iuv.to(device, dtype), "source_clip": source_clip, "texture_clip": texture_clip,
              "face_embedding": face.to(device, dtype)}

    def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        latents = latents.to(dtype)
        cond = net(latents, t, **inputs, reference_tokens=reference).sample.float()
        if guidance_scale == 1.0:
            return cond
        uncond = net(latents, t, **inputs, reference_tokens=None, uncond=True).sample.float()
        return uncond + guidance_scale * (cond - uncond)  # guidance and sampler in fp32

    sampler = make_scheduler("ddim", model.scheduler.config)
    sampler.set_timesteps(steps, device=device)
    step = sampler.step
    sampler.step = lambda *args, **kwargs: step(*args, eta=eta, **kwargs)  # denoise() does not pass eta
    latents = randn_per_image((len(source), net.unet.config.in_channels, *latent_hw), generators, device)
    latents = denoise(predict, sampler, latents * sampler.init_noise_sigma, sampler.timesteps, generators, show_progress)
    images = decode_latents(model.vae, latents)
    return MCLDOutput([tensor_to_pil(image) for image in images], latents)


def transfer_pairs(model: MCLDModel, image_dir, pairs: list[tuple[str, str]], indices: list[int], batch_size: int = 8,
                   seed: int = 0, **sampling) -> Iterator[tuple[list[tuple], list[Image.Image]]]:
    """Yield (read pairs: (source, texture, IUV, face, target or None), images) batch by batch for pairs[indices] of a
    split's image folder; pair i uses seed + i, whatever the batch size and whichever pairs are left out."""
    from atelier.methods.mcld.train import read_pair

    for start in range(0, len(indices), batch_size):
        chosen = indices[start : start + batch_size]
        items = [read_pair(image_dir, *pairs[i], model) for i in chosen]
        source, texture, iuv, face = (torch.stack(part) for part in zip(*(item[:4] for item in items)))
        out = transfer(model, source, texture, iuv, face, seed=[seed + i for i in chosen], show_progress=False, **sampling)
        yield items, out.images
