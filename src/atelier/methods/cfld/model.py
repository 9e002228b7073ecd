"""CFLD's model (Lu et al., CVPR 2024) as a unit: its typed config, build, load, save and speed set-up.

`load_pose_model` reads atelier's CFLD folder (a training run's `final/`, or the run folder) or CFLD's released
checkpoint folder (`pytorch_model.bin` + `pytorch_model_1.bin`, with `base` = a Stable Diffusion 1.5 folder for the VAE,
scheduler and UNet configuration; the paper's sizes are assumed: 512x512 output, 256x256 source and pose map).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from atelier.config import from_dict, read_yaml, save_yaml
from atelier.data.pose import FRAME_HW
from atelier.diffusion.components import vae_scale
from atelier.diffusion.speed import SpeedConfig, apply_speed_to_unet, apply_speed_to_vae, cast, set_attention
from atelier.errors import UserError
from atelier.methods.cfld.network import CFLD, CFLDConfig

MODEL_CONFIG = "cfld.yaml"
SD15_WIDTHS, SD15_CONTEXT = (320, 640, 1280, 1280), 768  # the UNet CFLD's release was trained with


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
        return vae_scale(self.vae)


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
    unet = components.unet.config
    widths, context = tuple(unet.block_out_channels), unet.cross_attention_dim
    if (widths, context) != (SD15_WIDTHS, SD15_CONTEXT):
        raise UserError(f"--base {base}: its UNet has block widths {'/'.join(map(str, widths))} and context width "
                        f"{context}, but CFLD's released checkpoint fits Stable Diffusion 1.5 ("
                        f"{'/'.join(map(str, SD15_WIDTHS))}, {SD15_CONTEXT}); pass --base with a Stable Diffusion 1.5 folder")
    config = PoseModelConfig()
    cfld = CFLD(config.cfld, components.unet, config.appearance_size)
    load_cfld_release(cfld, folder)
    return PoseModel(cfld, components.vae, components.scheduler, config)


def _checkpoint_folder(checkpoint: str | Path) -> tuple[Path, bool]:
    """(the folder holding the model, whether it is CFLD's release) of a pose run, its final/, or the release folder."""
    from atelier.methods.cfld.release import find_release_files

    folder = Path(checkpoint)
    if (folder / "final" / MODEL_CONFIG).is_file():
        folder = folder / "final"
    if (folder / MODEL_CONFIG).is_file():
        return folder, False
    if find_release_files(folder) is not None:
        return folder, True
    raise UserError(f"--checkpoint {checkpoint}: expected a pose training run (RUN/ or RUN/final/ with {MODEL_CONFIG}) "
                    "or CFLD's release folder (pytorch_model.bin + pytorch_model_1.bin)")


def keypoint_frame(checkpoint: str | Path) -> tuple[int, int]:
    """The (H, W) frame a pose model's keypoints are given in, read from its cfld.yaml without loading the model (the
    release: DeepFashion's 256x176), so a target pose can be checked before the load."""
    folder, released = _checkpoint_folder(checkpoint)
    if released:
        return PoseModelConfig().frame
    return tuple(from_dict(PoseModelConfig, read_yaml(folder / MODEL_CONFIG), where=MODEL_CONFIG).frame)


def load_pose_model(checkpoint: str | Path, base: str | None = None, device: str | torch.device | None = None,
                    speed: SpeedConfig | None = None) -> PoseModel:
    """atelier's CFLD folder (run or run/final) or CFLD's release folder (needs `base`), in eval mode on `device`,
    made fast by `speed` (default `SpeedConfig()`; `SpeedConfig.plain()` is the reference path)."""
    from atelier.diffusion.components import freeze

    folder, released = _checkpoint_folder(checkpoint)
    model = _load_release(folder, base) if released else _load_atelier_folder(folder)
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
