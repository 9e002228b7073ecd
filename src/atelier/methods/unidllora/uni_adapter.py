"""Uni-DlLoRA's Uni-adapter (Liao et al. 2024): two T2I-Adapters (Mou et al. 2023), one fed the RGB image and one
its sketch, combined as diffusers' `MultiAdapter`.

Their features are computed once per image and added to the UNet's down-block residuals at every denoising step
(`down_intrablock_additional_residuals`, as diffusers' T2I-Adapter pipelines pass them). The conditioning scale is
split evenly between the two by default (the released pipeline: `adapter_conditioning_scale / num_adapter` each);
per-adapter shares can be given instead. Each adapter is diffusers' `T2IAdapter` (`full_adapter`) with one feature
map per UNet down block (channels = the UNet's `block_out_channels`, pixel-unshuffle factor = the VAE's
downsampling), so SD 1.5 gets the published (320, 640, 1280, 1280) / 8 layout and the tiny model (32, 32, 64) / 4.
Files: `MultiAdapter.save_pretrained(DIR/adapter)` writes `DIR/adapter/` (RGB) and `DIR/adapter_1/` (sketch), the
layout the released checkpoint's `MultiAdapter.from_pretrained(DIR/adapter)` reads.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from atelier.errors import UserError
from atelier.methods.unidllora.sketch import Sketcher

logger = logging.getLogger(__name__)

ADAPTER_FOLDER = "adapter"  # the RGB adapter; the sketch adapter is its sibling adapter_1/ (MultiAdapter's rule)
BRANCHES = ("rgb", "sketch")
IN_CHANNELS = {"rgb": 3, "sketch": 1}  # the released pipeline feeds the image and its sketch converted to 'L'


@dataclass
class UniAdapterSettings:
    """Architecture of the two T2I-Adapters, and where to start them from (fresh, or a saved/released adapter/)."""

    num_res_blocks: int = 2  # ResNet blocks per feature level (T2I-Adapter's default)
    init_from: str | None = None  # a folder holding adapter/ and adapter_1/ (ours or the released checkpoint)
    scale: float = 1.0  # total conditioning scale, split by `weights`
    weights: list[float] = field(default_factory=lambda: [0.5, 0.5])  # shares of the RGB and sketch adapters


def branch_weights(scale: float, weights: list[float] | tuple[float, ...] | None = None) -> list[float]:
    """Per-adapter weights: `scale` split evenly (the released pipeline) or scale x each given share."""
    shares = list(weights) if weights is not None else [1.0 / len(BRANCHES)] * len(BRANCHES)
    if len(shares) != len(BRANCHES) or scale < 0 or any(share < 0 for share in shares):
        raise UserError(f"adapter scale {scale} / weights {shares}: expected a scale >= 0 and {len(BRANCHES)} shares "
                        f">= 0 for the {' and '.join(BRANCHES)} adapters, e.g. rgb=0.5,sketch=0.5")
    return [scale * share for share in shares]


def build_uni_adapter(unet: torch.nn.Module, latent_scale: int, num_res_blocks: int = 2, seed: int = 0):
    """A fresh MultiAdapter (RGB + sketch T2I-Adapters) whose features fit `unet`'s down blocks."""
    from diffusers import MultiAdapter, T2IAdapter

    torch.manual_seed(seed)
    channels = list(unet.config.block_out_channels)
    adapters = [T2IAdapter(in_channels=IN_CHANNELS[branch], channels=channels, num_res_blocks=num_res_blocks,
                           downscale_factor=latent_scale, adapter_type="full_adapter") for branch in BRANCHES]
    return MultiAdapter(adapters)


def check_fits(adapter, unet: torch.nn.Module, latent_scale: int, source: str = "adapter") -> None:
    """Fail unless the two adapters' features match the UNet's down blocks and the VAE's downsampling."""
    channels = list(unet.config.block_out_channels)
    if len(adapter.adapters) != len(BRANCHES):
        raise UserError(f"{source}: expected {len(BRANCHES)} T2I-Adapters (adapter/ for RGB, adapter_1/ for the sketch), "
                        f"found {len(adapter.adapters)}")
    for branch, member in zip(BRANCHES, adapter.adapters):
        config = member.config
        if list(config.channels) != channels or config.downscale_factor != latent_scale:
            raise UserError(f"{source}: the {branch} adapter has channels {list(config.channels)} / downscale "
                            f"{config.downscale_factor}; this base model needs {channels} / {latent_scale}. "
                            "Use an adapter trained for the same base (SD 1.5: 320, 640, 1280, 1280 / 8)")
        if config.in_channels != IN_CHANNELS[branch]:
            raise UserError(f"{source}: the {branch} adapter reads {config.in_channels} channels, expected "
                            f"{IN_CHANNELS[branch]} (RGB image first, grey sketch second)")


def load_uni_adapter(folder: str | os.PathLike, unet: torch.nn.Module, latent_scale: int):
    """The MultiAdapter saved in FOLDER/adapter and FOLDER/adapter_1 (ours or the released checkpoint's)."""
    from diffusers import MultiAdapter

    path = Path(folder).expanduser() / ADAPTER_FOLDER
    if not (path / "config.json").is_file():
        raise UserError(f"{folder}: no {ADAPTER_FOLDER}/config.json; expected the Uni-adapter as {ADAPTER_FOLDER}/ (RGB) "
                        f"and {ADAPTER_FOLDER}_1/ (sketch), as MultiAdapter.save_pretrained writes them")
    try:
        adapter = MultiAdapter.from_pretrained(str(path))
    except ValueError as error:  # MultiAdapter refuses a single adapter: adapter_1/ is missing
        raise UserError(f"{folder}: {str(error).splitlines()[0]}; expected {ADAPTER_FOLDER}/ and {ADAPTER_FOLDER}_1/") from None
    check_fits(adapter, unet, latent_scale, source=str(path))
    return adapter


@dataclass
class UniAdapter:
    """The MultiAdapter plus the sketch extractor feeding its second branch."""

    adapter: torch.nn.Module
    sketcher: Sketcher

    def inputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(RGB in [0, 1], sketch in [0, 1]) adapter inputs of (B, 3, H, W) images in [-1, 1]."""
        param = next(self.adapter.parameters())
        rgb = ((images.float() + 1) / 2).clamp(0, 1)
        return rgb.to(param.device, param.dtype), self.sketcher(images).to(param.device, param.dtype)

    def features(self, rgb: torch.Tensor, sketch: torch.Tensor, weights: list[float]) -> list[torch.Tensor]:
        """Weighted sum of the two adapters' features: one (B, C_i, H_i, W_i) map per UNet down block."""
        factor = self.adapter.total_downscale_factor
        if rgb.shape[-2] % factor or rgb.shape[-1] % factor:
            raise UserError(f"image size {rgb.shape[-1]}x{rgb.shape[-2]}: the Uni-adapter needs multiples of {factor} "
                            f"(pixel unshuffle x one halving per down block); choose --size accordingly")
        return self.adapter([rgb, sketch], weights)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write FOLDER/adapter/ (RGB) and FOLDER/adapter_1/ (sketch) with diffusers' MultiAdapter.save_pretrained."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.adapter.save_pretrained(str(folder / ADAPTER_FOLDER))
        return folder


class ResidualUNet(torch.nn.Module):
    """The UNet with fixed adapter features added to its down-block residuals on every call (batch-repeated for CFG)."""

    def __init__(self, unet: torch.nn.Module, features: list[torch.Tensor]):
        super().__init__()
        self.unet = unet
        self.features = features

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, **kwargs):
        repeats = sample.shape[0] // self.features[0].shape[0]  # 2 when guidance batches [uncond; cond]
        # a fresh list each call: the UNet pops its entries; both guidance halves get the residuals, as in diffusers
        residuals = [feature.repeat(repeats, 1, 1, 1) for feature in self.features]
        return self.unet(sample, timestep, encoder_hidden_states, down_intrablock_additional_residuals=residuals, **kwargs)
