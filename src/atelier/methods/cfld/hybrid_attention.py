"""CFLD's hybrid-granularity attention: multi-scale Swin features become a bias on the UNet's cross-attention queries.

Lu et al., CVPR 2024 (the released code's `AppearanceEncoder`): for each targeted up-block transformer, the Swin
feature map of the matching resolution -> zero-initialised 1x1 conv (to half its width) -> 4 transformer blocks
(self-attention twice, then a feed-forward; heads of width 32) -> zero-initialised 1x1 conv (to the transformer's
width) is added to that transformer's cross-attention queries right after `to_q`. Because both convs start at zero,
the UNet's output is unchanged at step 0 and the fine texture information is blended in as training goes.

Targets are numbered as CFLD numbers them: transformer j of up-block i is `i * len(attentions) + j`, so on SD 1.5
(up-block 0 has no attention, three transformers per block) they are 3..11, and CFLD targets all of them; the released
checkpoint lists them from 11 down to 3, and so does `targets` here (module index k <-> the same k in the file). A
target at resolution level r (0 = the latent grid, each further up-block halving it) reads Swin stage r: on SD 1.5
with a 256x256 source and a 512x512 target, stage r and level r have the same grid (64, 32, 16). Where the grids differ
the feature map is resized (bilinear) to the level's grid first; at CFLD's sizes that never happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HybridTarget:
    """One targeted up-block transformer: its CFLD index, resolution level, query width and the Swin stage it reads."""

    index: int
    level: int
    channels: int
    stage: int
    feature_dim: int


def level_grid(latent_hw: tuple[int, int], level: int) -> tuple[int, int]:
    """Grid of a UNet resolution level: the latent grid halved `level` times, rounding up (stride-2 convs, padding 1)."""
    height, width = latent_hw
    for _ in range(level):
        height, width = (height + 1) // 2, (width + 1) // 2
    return height, width


class HybridGranularityAttention(nn.Module):
    """Per target: zero conv -> transformer blocks -> zero conv; returns {CFLD index: (B, h*w, C) query bias}."""

    def __init__(self, targets: list[HybridTarget], depth: int = 4, head_dim: int = 32) -> None:
        super().__init__()
        from diffusers.models.attention import BasicTransformerBlock

        self.targets = list(targets)
        self.zero_conv_ins = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.zero_conv_outs = nn.ModuleList()
        for target in self.targets:
            width = target.feature_dim // 2
            if width % head_dim:
                raise ValueError(f"hybrid attention: width {width} (half of Swin stage {target.stage}'s "
                                 f"{target.feature_dim}) is not a multiple of head_dim {head_dim}")
            self.zero_conv_ins.append(nn.Conv2d(target.feature_dim, width, kernel_size=1))
            self.blocks.append(nn.Sequential(*[
                BasicTransformerBlock(width, width // head_dim, head_dim, double_self_attention=True) for _ in range(depth)
            ]))  # fmt: skip
            self.zero_conv_outs.append(nn.Conv2d(width, target.channels, kernel_size=1))
        for conv in [*self.zero_conv_ins, *self.zero_conv_outs]:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[torch.Tensor], latent_hw: tuple[int, int]) -> dict[int, torch.Tensor]:
        """Swin stage maps (B, C_s, h_s, w_s) and the latent grid -> {CFLD index: bias (B, h*w, C) for that transformer}."""
        biases = {}
        for target, conv_in, blocks, conv_out in zip(self.targets, self.zero_conv_ins, self.blocks, self.zero_conv_outs):
            grid = level_grid(latent_hw, target.level)
            feature = features[target.stage]
            if tuple(feature.shape[-2:]) != grid:
                feature = F.interpolate(feature, size=grid, mode="bilinear", align_corners=False)
            hidden = conv_in(feature)
            batch, width = hidden.shape[:2]
            tokens = blocks(hidden.flatten(2).transpose(1, 2))  # (B, h*w, width), row-major like the UNet's tokens
            hidden = tokens.transpose(1, 2).reshape(batch, width, *grid)
            biases[target.index] = conv_out(hidden).flatten(2).transpose(1, 2)
        return biases
