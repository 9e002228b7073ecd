"""MCLD's pose guider: the target's DensePose IUV image becomes a feature map added to the UNet's `conv_in` output.

Multi-focal conditioned latent diffusion (MCLD, CVPR 2025): a small convolutional encoder, 3 -> 16 -> 32 -> 96 -> 256
channels with a stride-2 convolution at each widening and SiLU after every convolution, then a zero-initialised
`conv_out` to the UNet's first width (320 on SD 1.5), so at step 0 the UNet sees nothing of the pose and learns to
use it gradually.

Layout. The channel list and parameter names (`conv_in`, `blocks.N`, `conv_out`) are those of ControlNet's
conditioning embedding (Zhang et al. 2023; diffusers' `ControlNetConditioningEmbedding`, whose default widths are
MCLD's 16/32/96/256), where every widening is a pair: a same-width 3x3 convolution, then the stride-2 one. MCLD's
released `pose_guider.pth` is read by these names (see release.py), so `refine_convs` chooses between that pair
layout (default, `blocks.0..5` on SD 1.5) and the four-convolution reading of that channel list (`blocks.0..2`);
a file of the other layout is refused with its keys listed. At SD 1.5 size the layouts hold 1,086,480 and 991,872
parameters (4.35 and 3.97 MB in float32), so a file's size already tells them apart.

Latent scale. The guider must land on the latent grid: it has one stride-2 convolution per halving of the VAE
(log2 of its latent scale: 3 for SD 1.5's factor 8, 2 for the tiny VAE's factor 4), so `channels` needs that many
entries plus one (conv_in's width). A list of another length is refused rather than cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

IUV_CHANNELS = 3  # DensePose (I, U, V) image, each in [0, 1]


@dataclass
class PoseGuiderConfig:
    """The pose guider's widths (MCLD: 16/32/96/256, SD 1.5's factor-8 VAE) and its convolution layout."""

    channels: list[int] = field(default_factory=lambda: [16, 32, 96, 256])
    refine_convs: bool = True  # a same-width 3x3 conv before each stride-2 conv (ControlNet's conditioning embedding)


def downsamplings(latent_scale: int) -> int:
    """Stride-2 convolutions that bring an image to the latent grid of a VAE with this scale (a power of two)."""
    count = round(math.log2(latent_scale)) if latent_scale > 0 else -1
    if count < 0 or 2**count != latent_scale:
        raise ValueError(f"latent scale {latent_scale}: expected a power of two (pixels per latent cell of the VAE)")
    return count


class PoseGuider(nn.Module):
    """(B, 3, H, W) IUV image in [0, 1] -> (B, out_channels, H / scale, W / scale), zero at initialisation."""

    def __init__(self, cfg: PoseGuiderConfig, out_channels: int, latent_scale: int = 8) -> None:
        super().__init__()
        channels = list(cfg.channels)
        steps = downsamplings(latent_scale)
        if len(channels) != steps + 1:
            raise ValueError(f"pose guider channels {channels}: a VAE with latent scale {latent_scale} needs {steps + 1} "
                             f"widths (conv_in's, then one per stride-2 convolution), got {len(channels)}")
        self.conv_in = nn.Conv2d(IUV_CHANNELS, channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        for width, wider in zip(channels[:-1], channels[1:]):
            if cfg.refine_convs:
                self.blocks.append(nn.Conv2d(width, width, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(width, wider, kernel_size=3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(channels[-1], out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # the UNet starts as if there were no pose guider
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, iuv: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.conv_in(iuv))
        for block in self.blocks:
            hidden = F.silu(block(hidden))
        return self.conv_out(hidden)
