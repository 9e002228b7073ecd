"""Pose-guided person image synthesis with MCLD (Liu et al., CVPR 2025): a source person redrawn in a target's IUV.

As MCLD's release samples: the reference UNet runs once per image on the texture latent (its posterior mean); DDIM,
20 steps, eta 0, on the trained scheduler's config (v-prediction, zero terminal SNR, trailing spacing); classifier-free
guidance 3.5 between the conditioned branch and MCLDNet's unconditional one (every condition zeroed, no reference
features; the pose guider keeps the target's IUV unless `uncond_keeps_pose` is false), one UNet call per branch.
Each pair draws its noise from its own seed. Outputs are named as CFLD's (`data.pairs.output_name`, which `cfld.sample.output_name` re-exports), so
`atelier evaluate --protocol cfld` matches them.

Editing (`edit`, `atelier edit`; MCLD's editing code is not released, this is our reading of the paper's "multi-focal"
edits): each condition is taken from a chosen person and the mix goes through `transfer` unchanged. The appearance
(the source image's CLIP token, the texture map, hence the reference UNet's tokens and the texture's CLIP token)
comes from the clothes donor but for the texture's head texels, which come with the face embedding from the face
donor (the texture map covers the whole body, face and hair included: without this, new clothes would bring their
wearer's face); the IUV image comes from the pose donor. Each defaults to the person edited, so an edit with no donor
is that person's reconstruction in its own pose.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
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

__all__ = ["EditConditions", "MCLDOutput", "edit", "edit_conditions", "output_name", "transfer", "transfer_pairs"]


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


@dataclass
class EditConditions:
    """One edit's conditions, each (C, H, W) or (E,) as `transfer` takes them without the batch axis, and the image file
    each came from: `source` (the clothes donor's image, for its CLIP token), `texture` (the clothes donor's texture
    map), `iuv` (the pose donor's IUV image), `face` (the face donor's embedding)."""

    source: torch.Tensor
    texture: torch.Tensor
    iuv: torch.Tensor
    face: torch.Tensor
    donors: dict[str, Path]  # {"clothes", "face", "pose"}: the image file whose condition was used


def edit_conditions(model: MCLDModel, person: str | Path, clothes: str | Path | None = None,
                    face: str | Path | None = None, pose: str | Path | None = None) -> EditConditions:
    """Read the mixed conditions of an edit of `person` at the model's sizes: each donor an image of a
    DeepFashion-layout folder with MCLD's condition files beside it (`data.condition_paths`); a donor left None is
    the person. The texture map is the clothes donor's with the head texels (DensePose parts 23, 24) of the face
    donor's, so the clothes do not bring their wearer's face. A missing texture or IUV is a UserError naming the
    file; a missing face file is zeros (no face), as MCLD's loader reads it."""
    from atelier.data.transforms import load_image_tensor
    from atelier.methods.mcld.data import condition_paths, read_face, read_pose_iuv, read_texture

    config = model.config
    donors = {"clothes": Path(clothes or person), "face": Path(face or person), "pose": Path(pose or person)}
    iuv, _ = read_pose_iuv(condition_paths(donors["pose"])["densepose"], config.image_size)
    texture = read_texture(condition_paths(donors["clothes"])["texture"], config.texture_size)
    if donors["face"] != donors["clothes"]:
        head = head_texels(config.texture_size)
        face_texture = read_texture(condition_paths(donors["face"])["texture"], config.texture_size)
        texture = torch.where(head, face_texture, texture)
    return EditConditions(
        source=load_image_tensor(donors["clothes"], config.image_size),
        texture=texture,
        iuv=iuv,
        face=read_face(condition_paths(donors["face"])["face"], model.net.cfg.projector.embedding_dim),
        donors=donors,
    )


def head_texels(size_hw: tuple[int, int]) -> torch.Tensor:
    """bool (H, W): the head's texels in an SMPL texture map read at `size_hw`."""
    from atelier.data.uv_texture import smpl_part_mask
    from atelier.methods.mcld.data import FACE_PARTS

    return torch.tensor(smpl_part_mask(FACE_PARTS, tuple(size_hw)))


def edit(model: MCLDModel, person: str | Path, clothes: str | Path | None = None, face: str | Path | None = None,
         pose: str | Path | None = None, *, seed: int = 0, **sampling) -> tuple[EditConditions, Image.Image]:
    """Redraw `person` with the clothes (appearance), face and pose of the given donors (None: the person's own):
    (the conditions used, the image). `sampling`: `transfer`'s steps, guidance_scale, eta, show_progress."""
    conditions = edit_conditions(model, person, clothes, face, pose)
    out = transfer(model, conditions.source[None], conditions.texture[None], conditions.iuv[None],
                   conditions.face[None], seed=seed, **sampling)
    return conditions, out.images[0]
