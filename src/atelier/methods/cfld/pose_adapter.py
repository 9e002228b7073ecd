"""CFLD's pose adapter (T2I-Adapter style, Mou et al. 2023): the target pose map becomes residuals of the UNet's down blocks.

Lu et al., CVPR 2024: PixelUnshuffle(4) folds the 21-channel pose map (RGB skeleton + 18 heatmaps) to the latent grid,
a 1x1 conv maps it to the first block's width, and one residual block per down-block resolution (320/640/1280 on SD
1.5, average-pooled by 2 in between) produces features that are added to the outputs of the UNet's down blocks (the
T2I-Adapter path of diffusers' `down_intrablock_additional_residuals`). Unlike the hybrid attention it is not
zero-initialised. Parameter names follow the released checkpoint (`conv_in`, `resnets.N.*`).
"""

from __future__ import annotations

import torch
from torch import nn

POSE_CHANNELS = 21


class PoseAdapter(nn.Module):
    """(B, 21, H, W) pose map -> one feature map per entry of `channels`, at the latent grid then halved each time."""

    def __init__(self, channels: list[int], downscale: int = 4, pose_channels: int = POSE_CHANNELS) -> None:
        super().__init__()
        from diffusers.models.resnet import ResnetBlock2D

        self.unshuffle = nn.PixelUnshuffle(downscale)
        self.conv_in = nn.Conv2d(pose_channels * downscale**2, channels[0], kernel_size=1)
        widths = [channels[0], *channels]
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels=widths[i], out_channels=widths[i + 1], temb_channels=None) for i in range(len(channels))
        ])  # fmt: skip
        self.downsample = nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True)  # rounds up like the UNet's stride-2 convs

    def forward(self, pose_map: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.conv_in(self.unshuffle(pose_map))
        features = []
        for index, resnet in enumerate(self.resnets):
            if index:
                hidden = self.downsample(hidden)
            hidden = resnet(hidden, None)
            features.append(hidden)
        return features
