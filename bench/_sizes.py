"""The suite's two sizes: what each row runs at, and the models (random weights: speed does not depend on them).

- `tiny`: atelier's tiny SD model (UNet ~1M parameters, VAE x4, 2-layer CLIP) at 64x48 px (the demo's size), on CPU.
- `sd15`: the Stable Diffusion 1.5 architecture (UNet 860M, VAE x8, CLIP 12 x 768) built from configs, at 512x512 px,
  on a CUDA GPU; pose transfer at CFLD's paper sizes on that UNet.
`quick` shrinks either to 2 denoising steps, batch 1 and one timed repeat: it exercises every code path, it measures
nothing worth comparing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Literal

import torch

SizeName = Literal["tiny", "sd15"]

@dataclass(frozen=True)
class SuiteSize:
    """Every setting one run of the suite uses."""

    name: SizeName
    image_hw: tuple[int, int]  # text-to-image and translate output (height, width)
    steps: tuple[int, ...] = (30, 50)
    batches: tuple[int, ...] = (1, 8)
    strength: float = 0.75  # translate: the last 75% of the steps run (SDEdit)
    guidance_scale: float = 7.5  # SD sampling uses DDIM on both sides (diffusers' DDIMScheduler)
    repeats: int = 3  # timed calls per side, interleaved; the median counts
    train_steps: int = 40
    train_batch: int = 8
    train_hw: tuple[int, int] = (64, 48)
    train_identities: int = 12  # FashionSynth identities (x 4 poses) in the training folder
    pose_steps: int = 50  # CFLD samples with DDPM, 50 steps, three branches
    pose_batch: int = 8
    eval_pairs: int = 256
    eval_hw: tuple[int, int] = (256, 176)
    device_name: str = "cpu"
    compile: bool = False  # ours with torch.compile of the UNet (the one-time compile shows in the warm-up seconds)

    @property
    def device(self) -> torch.device:
        return torch.device(self.device_name)


SIZES: dict[str, SuiteSize] = {
    "tiny": SuiteSize("tiny", image_hw=(64, 48)),
    "sd15": SuiteSize("sd15", image_hw=(512, 512), train_steps=30, train_batch=8, train_hw=(512, 512), pose_batch=8,
                      eval_pairs=2000, device_name="cuda"),
}


def ours_speed(size: SuiteSize):
    """The speed settings ours runs with: `SpeedConfig()`'s defaults, with torch.compile as the size says."""
    from atelier.diffusion.speed import SpeedConfig

    return SpeedConfig(compile=size.compile)


def suite_size(name: SizeName, quick: bool = False, device: str | None = None) -> SuiteSize:
    """The named size (on `device` instead of its own when given); with `quick`, 2 steps, batch 1, one repeat and a
    few training steps and pairs."""
    size = replace(SIZES[name], device_name=device or SIZES[name].device_name)
    if quick:
        size = replace(size, steps=(2,), batches=(1,), repeats=1, train_steps=2, train_batch=2, train_identities=2, pose_steps=2,
                       pose_batch=1, eval_pairs=8)
    return size


def build_components(size: SuiteSize, seed: int = 0):
    """SD components with random weights at the size's architecture, on the size's device, fp32, eval mode."""
    from atelier.diffusion.components import build_sd15_components, build_tiny_components

    if size.name == "tiny":
        components = build_tiny_components(seed=seed)
    else:
        components = build_sd15_components(seed)
    for module in (components.unet, components.vae, components.text_encoder):
        module.requires_grad_(False).eval()
    return components.to(size.device)


def build_pose_model(size: SuiteSize, components):
    """A CFLD pose model around `components`' UNet and VAE: the demo's tiny CFLD at 64x48, or the paper's at 512."""
    from atelier.methods.cfld.model import PoseModel, PoseModelConfig, build_cfld
    from atelier.methods.cfld.network import tiny_cfld_config

    if size.name == "tiny":
        config = PoseModelConfig(cfld=tiny_cfld_config(), image_size=(64, 48), appearance_size=(64, 48),
                                 pose_size=(64, 48))
    else:
        config = PoseModelConfig()
    config.cfld.appearance.pretrained = None  # random weights: no Swin checkpoint to read
    unet = copy.deepcopy(components.unet)  # CFLD installs its attention processors: keep the shared UNet plain
    cfld = build_cfld(config, unet).to(size.device).eval().requires_grad_(False)
    return PoseModel(cfld, components.vae, components.scheduler, config)
