"""Pose-guided person image synthesis with CFLD (Lu et al., CVPR 2024): a source person redrawn in a target pose.

Sampling as CFLD's test script ("uc_down_full"): three UNet branches per step, batched in one call,
    unconditional  null prompt, no pose residuals, no query bias
    pose           null prompt, pose residuals,    no query bias
    full           decoder context, pose residuals, query biases
combined as eps = eps_uc + pose_scale (eps_pose - eps_uc) + full_scale (eps_full - eps_pose); the paper samples with
DDPM, 50 steps, both scales 2. With equal scales this is classifier-free guidance between the unconditional and the
full branch (the pose branch cancels). The scheduler owns all noise math (`diffusion.sampling.denoise`); each pair
draws its noise from its own seed, so a pair's image does not depend on the batch it is drawn in.
The model itself (config, build, load, save) is atelier.methods.cfld.model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from PIL import Image

from atelier.data.pairs import output_name  # noqa: F401  (re-exported: CFLD's and MCLD's outputs share it)
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
from atelier.methods.cfld.model import PoseModel, check_sizes
from atelier.methods.cfld.network import CFLD, Conditioning
from atelier.utils.images import tensor_to_pil

logger = logging.getLogger(__name__)


@dataclass
class PoseTransferOutput:
    images: list[Image.Image]
    latents: torch.Tensor


def guided_noise(eps_uc: torch.Tensor, eps_pose: torch.Tensor, eps_full: torch.Tensor, pose_scale: float,
                 full_scale: float) -> torch.Tensor:
    """CFLD's three-branch guidance: eps_uc + s_pose (eps_pose - eps_uc) + s_full (eps_full - eps_pose)."""
    return eps_uc + pose_scale * (eps_pose - eps_uc) + full_scale * (eps_full - eps_pose)


def cfld_guidance(cfld: CFLD, cond: Conditioning, pose_scale: float, full_scale: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """predict_noise(latents, t) running the unconditional, pose and full branches as one 3B-batch UNet call; with
    both scales 1 the combination is eps_full exactly, so only the full branch runs."""
    batch, dtype = cond.context.shape[0], next(cfld.unet.parameters()).dtype
    if pose_scale == 1.0 and full_scale == 1.0:
        full_context, full_pose = cond.context.to(dtype), [f.to(dtype) for f in cond.pose_features]
        return lambda latents, t: cfld(latents.to(dtype), t, full_context, full_pose, cond.query_bias).sample.float()
    null = cfld.null_context(batch)
    context = torch.cat([null, null, cond.context]).to(dtype)
    pose_features = [torch.cat([torch.zeros_like(f), f, f]).to(dtype) for f in cond.pose_features]
    query_bias = {k: torch.cat([torch.zeros_like(b), torch.zeros_like(b), b]) for k, b in cond.query_bias.items()}

    def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = cfld(torch.cat([latents] * 3).to(dtype), t, context, pose_features, query_bias).sample
        return guided_noise(*eps.float().chunk(3), pose_scale, full_scale)  # guidance and sampler in fp32

    return predict


@torch.no_grad()
def transfer(model: PoseModel, appearance: torch.Tensor, target_pose: torch.Tensor, *, steps: int = 50,
             scheduler: SchedulerName = "ddpm", pose_scale: float = 2.0, full_scale: float = 2.0, seed: Seeds = 0,
             show_progress: bool = True) -> PoseTransferOutput:
    """Redraw each source (B, 3, h, w) in [-1, 1] in its target pose map (B, 21, H, W): one image per pair.

    `seed`: an int S seeds pair i with S + i, a sequence gives each pair's seed.
    """
    # 1. validate
    latent_hw = check_sizes(model.config, model.latent_scale)
    if len(appearance) != len(target_pose):
        raise ValueError(f"got {len(appearance)} source images for {len(target_pose)} target poses; pass one pose per source")
    if tuple(target_pose.shape[-2:]) != tuple(model.config.pose_size) or target_pose.shape[1] != 21:
        raise ValueError(f"target poses {tuple(target_pose.shape[1:])}: expected (21, {model.config.pose_size[0]}, "
                         f"{model.config.pose_size[1]}) CFLD pose maps")
    check_steps(steps)
    check_range({"--pose-scale": pose_scale, "--full-scale": full_scale})
    param = next(model.cfld.parameters())
    device = param.device
    generators = image_generators(seed, len(appearance), device)
    # 2. encode the conditions: decoder context, pose residuals, query biases
    cond = model.cfld.condition(appearance.to(device, param.dtype), target_pose.to(device, param.dtype), latent_hw)
    # 3. timesteps
    sampler = make_scheduler(scheduler, model.scheduler.config)
    sampler.set_timesteps(steps, device=device)
    # 4. latents
    channels = model.cfld.unet.config.in_channels
    latents = randn_per_image((len(appearance), channels, *latent_hw), generators, device)
    latents = latents * sampler.init_noise_sigma
    # 5. denoise
    predict = cfld_guidance(model.cfld, cond, pose_scale, full_scale)
    latents = denoise(predict, sampler, latents, sampler.timesteps, generators, show_progress)
    # 6. decode
    images = decode_latents(model.vae, latents)
    return PoseTransferOutput([tensor_to_pil(image) for image in images], latents)


def transfer_pairs(model: PoseModel, pairs, indices: list[int], batch_size: int = 8, seed: int = 0,
                   **sampling: Any) -> Iterator[tuple[list, list[Image.Image]]]:
    """Yield (PosePair items, generated images) batch by batch for pairs[indices] (a `data.pairs.PosePairs`).

    Pair i of `pairs` uses seed + i (its index in the pair list, not in `indices`), so its image is the same whatever
    the batch size and whichever pairs are left out (e.g. those already drawn by an interrupted run).
    """
    for start in range(0, len(indices), batch_size):
        chosen = indices[start : start + batch_size]
        items = [pairs[i] for i in chosen]
        out = transfer(model, torch.stack([it.appearance for it in items]), torch.stack([it.target_pose for it in items]),
                       seed=[seed + i for i in chosen], show_progress=False, **sampling)
        yield items, out.images
