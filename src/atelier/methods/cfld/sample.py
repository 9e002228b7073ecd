"""Pose-guided person image synthesis with CFLD (Lu et al., CVPR 2024): a source person redrawn in a target pose.

Sampling as CFLD's test script ("uc_down_full"): three UNet branches per step, batched in one call,
    unconditional  null prompt, no pose residuals, no query bias
    pose           null prompt, pose residuals,    no query bias
    full           decoder context, pose residuals, query biases
combined as eps = eps_uc + pose_scale (eps_pose - eps_uc) + full_scale (eps_full - eps_pose); the paper samples with
DDPM, 50 steps, both scales 2. With equal scales this is classifier-free guidance between the unconditional and the
full branch (the pose branch cancels). The scheduler owns all noise math (`diffusion.sampling.denoise`); each pair
draws its noise from its own seed, so a pair's image does not depend on the batch it is drawn in.

`load_pose_model` reads atelier's CFLD folder (a training run's `final/`, or the run folder) or CFLD's released
checkpoint folder (`pytorch_model.bin` + `pytorch_model_1.bin`, with `base` = a Stable Diffusion 1.5 folder for the VAE,
scheduler and UNet configuration; the paper's sizes are assumed: 512x512 output, 256x256 source and pose map).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from PIL import Image

from atelier.config import from_dict, read_yaml, save_yaml
from atelier.data.pose import FRAME_HW
from atelier.diffusion.sampling import (
    SchedulerName,
    Seeds,
    decode_latents,
    denoise,
    image_generators,
    make_scheduler,
    randn_per_image,
)
from atelier.diffusion.speed import SpeedConfig, apply_speed_to_unet, apply_speed_to_vae, cast, set_attention
from atelier.errors import UserError
from atelier.methods.cfld.network import CFLD, CFLDConfig, Conditioning
from atelier.utils.images import tensor_to_pil

logger = logging.getLogger(__name__)

MODEL_CONFIG = "cfld.yaml"


@dataclass
class PoseModelConfig:
    """Everything needed to rebuild a trained CFLD: its parts and the sizes it works at ((height, width) each)."""

    cfld: CFLDConfig = field(default_factory=CFLDConfig)
    image_size: tuple[int, int] = (512, 512)  # generated image (CFLD stretches DeepFashion to 512x512)
    appearance_size: tuple[int, int] = (256, 256)  # source image fed to the Swin backbone
    pose_size: tuple[int, int] = (256, 256)  # pose map (PixelUnshuffle(4) brings it to the 64x64 latent grid)
    frame: tuple[int, int] = FRAME_HW  # frame of the keypoints (256x176 DeepFashion, 128x64 Market-1501)


@dataclass
class PoseModel:
    """A CFLD model ready to sample: the CFLD module (UNet inside), the VAE, the scheduler and the sizes."""

    cfld: CFLD
    vae: Any
    scheduler: Any
    config: PoseModelConfig

    @property
    def latent_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


@dataclass
class PoseTransferOutput:
    images: list[Image.Image]
    latents: torch.Tensor


def check_sizes(config: PoseModelConfig, latent_scale: int) -> tuple[int, int]:
    """The latent grid of the generated image; UserError when the image or pose-map size does not fit the model."""
    height, width = config.image_size
    if height % latent_scale or width % latent_scale:
        raise UserError(f"image size {height}x{width} (HxW) must be a multiple of {latent_scale}, the VAE's downsampling")
    latent_hw = (height // latent_scale, width // latent_scale)
    step = config.cfld.pose_downscale
    if tuple(config.pose_size) != (latent_hw[0] * step, latent_hw[1] * step):
        raise UserError(f"pose map size {tuple(config.pose_size)} must be the latent grid {latent_hw} times the pose "
                        f"adapter's PixelUnshuffle factor {step}: use {(latent_hw[0] * step, latent_hw[1] * step)}")
    return latent_hw


def build_cfld(config: PoseModelConfig, unet) -> CFLD:
    """A fresh CFLD around `unet` (random parts; Swin from its official weights when the config names a file)."""
    from atelier.methods.cfld.release import load_swin_weights

    model = CFLD(config.cfld, unet, tuple(config.appearance_size))
    if config.cfld.appearance.pretrained:
        load_swin_weights(model.appearance, config.cfld.appearance.pretrained)
    return model


def _load_atelier_folder(folder: Path) -> PoseModel:
    """atelier's CFLD folder: cfld.yaml + cfld.safetensors + unet/ vae/ scheduler/."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from atelier.methods.cfld.release import CFLD_WEIGHTS, load_cfld_weights

    config = from_dict(PoseModelConfig, read_yaml(folder / MODEL_CONFIG), where=MODEL_CONFIG)
    config.cfld.appearance.pretrained = None  # the trained weights replace the initialisation
    cfld = CFLD(config.cfld, UNet2DConditionModel.from_pretrained(folder / "unet"), tuple(config.appearance_size))
    load_cfld_weights(cfld, folder / CFLD_WEIGHTS)
    return PoseModel(cfld, AutoencoderKL.from_pretrained(folder / "vae"), DDPMScheduler.from_pretrained(folder / "scheduler"), config)


def _load_release(folder: Path, base: str | None) -> PoseModel:
    """CFLD's released checkpoint on a Stable Diffusion 1.5 folder, at the paper's sizes."""
    from atelier.diffusion.components import load_components
    from atelier.methods.cfld.release import load_cfld_release

    if base is None:
        raise UserError(f"{folder} is CFLD's released checkpoint: pass --base with a Stable Diffusion 1.5 folder "
                        "(its VAE, scheduler and UNet configuration are used)")
    components = load_components(base)
    config = PoseModelConfig()
    cfld = CFLD(config.cfld, components.unet, config.appearance_size)
    load_cfld_release(cfld, folder)
    return PoseModel(cfld, components.vae, components.scheduler, config)


def load_pose_model(checkpoint: str | Path, base: str | None = None, device: str | torch.device | None = None,
                    speed: SpeedConfig | None = None) -> PoseModel:
    """atelier's CFLD folder (run or run/final) or CFLD's release folder (needs `base`), in eval mode on `device`,
    made fast by `speed` (default `SpeedConfig()`; `SpeedConfig.plain()` is the reference path)."""
    from atelier.diffusion.components import freeze
    from atelier.methods.cfld.release import find_release_files

    folder = Path(checkpoint)
    if (folder / "final" / MODEL_CONFIG).is_file():
        folder = folder / "final"
    if (folder / MODEL_CONFIG).is_file():
        model = _load_atelier_folder(folder)
    elif find_release_files(folder) is not None:
        model = _load_release(folder, base)
    else:
        raise UserError(f"--checkpoint {checkpoint}: expected a pose training run (RUN/ or RUN/final/ with {MODEL_CONFIG}) "
                        "or CFLD's release folder (pytorch_model.bin + pytorch_model_1.bin)")
    freeze(model.cfld, model.vae)
    return apply_speed_to_pose_model(model, speed or SpeedConfig(), device or ("cuda" if torch.cuda.is_available() else "cpu"))


def apply_speed_to_pose_model(model: PoseModel, speed: SpeedConfig, device: str | torch.device | None = None) -> PoseModel:
    """Apply `speed` to a CFLD model in place (diffusion.speed): its UNet, its conditioning parts and the VAE."""
    device = torch.device(device) if device is not None else next(model.cfld.parameters()).device
    for part in model.cfld.children():  # the conditioning parts' transformer blocks; the UNet's below
        if part is not model.cfld.unet:
            set_attention(part, speed.sdpa, speed.fuse_qkv)
    model.cfld.to(device)
    cast(model.cfld, speed.torch_dtype(device))
    apply_speed_to_unet(model.cfld.unet, speed, device)  # CFLD's query-bias processors are kept (always SDPA)
    apply_speed_to_vae(model.vae, speed, device)
    return model


def save_pose_model(model: PoseModel, folder: str | Path) -> Path:
    """Write atelier's CFLD folder (cfld.safetensors, unet/, vae/, scheduler/, cfld.yaml)."""
    from atelier.methods.cfld.release import save_cfld

    save_cfld(model.cfld, model.vae, model.scheduler, folder)
    save_yaml(model.config, Path(folder) / MODEL_CONFIG)
    return Path(folder)


def guided_noise(eps_uc: torch.Tensor, eps_pose: torch.Tensor, eps_full: torch.Tensor, pose_scale: float,
                 full_scale: float) -> torch.Tensor:
    """CFLD's three-branch guidance: eps_uc + s_pose (eps_pose - eps_uc) + s_full (eps_full - eps_pose)."""
    return eps_uc + pose_scale * (eps_pose - eps_uc) + full_scale * (eps_full - eps_pose)


def cfld_guidance(cfld: CFLD, cond: Conditioning, pose_scale: float, full_scale: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """predict_noise(latents, t) running the unconditional, pose and full branches as one 3B-batch UNet call."""
    batch, dtype = cond.context.shape[0], next(cfld.unet.parameters()).dtype
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
    if steps < 1:
        raise UserError(f"--steps {steps}: expected a positive number of sampling steps")
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


def output_name(source: str, target: str) -> str:
    """`<source stem>_2_<target stem>.png`: the MCLD/CFLD release naming that `atelier evaluate` matches."""
    return f"{Path(source).stem}_2_{Path(target).stem}.png"


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
