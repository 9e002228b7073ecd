"""CFLD's appearance backbone: a Swin Transformer (Liu et al., ICCV 2021) from transformers, read stage by stage.

CFLD (Lu et al., CVPR 2024) fine-tunes Swin-B (embed 128, depths 2-2-18-2, heads 4-8-16-32) at 256x256 with window 16,
initialised from the official `swin_base_patch4_window12_384_22kto1k.pth` (see `release.py` for that layout). Its
input is the source image normalised to [-1, 1] (not ImageNet statistics) and its outputs are every stage's feature
map *before* patch merging, without the final LayerNorm: the early stages feed the hybrid-granularity attention, the
last one the perception-refined decoder.

Windows: the official Swin clamps a stage's window to its grid when the grid is not larger than the window (and then
does not shift); transformers applies the same rule at run time but keeps the relative-position table of the
configured window, which fails for such stages (CFLD's last stage: an 8x8 grid under window 16). `fit_windows`
rebuilds those stages' tables at the clamped size once, as the official model is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class AppearanceConfig:
    """The Swin Transformer of the appearance encoder (defaults: CFLD's Swin-B at window 16)."""

    embed_dim: int = 128
    depths: list[int] = field(default_factory=lambda: [2, 2, 18, 2])
    num_heads: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    window_size: int = 16
    drop_path_rate: float = 0.2
    pretrained: str | None = None  # official Swin weights file (swin_base_patch4_window12_384_22kto1k.pth)


def stage_grids(image_hw: tuple[int, int], stages: int, patch_size: int = 4) -> list[tuple[int, int]]:
    """Token grid (h, w) of each Swin stage for an input of image_hw (patch embedding, then halving, rounding up)."""
    height, width = -(-image_hw[0] // patch_size), -(-image_hw[1] // patch_size)
    grids = []
    for _ in range(stages):
        grids.append((height, width))
        height, width = (height + 1) // 2, (width + 1) // 2
    return grids


def fit_windows(encoder: nn.Module, grids: list[tuple[int, int]], window_size: int) -> None:
    """Clamp each stage's window to its grid where the grid is not larger (no shift there), as the official Swin does."""
    from transformers.models.swin.modeling_swin import SwinRelativePositionBias

    for stage, grid in zip(encoder.layers, grids):
        if min(grid) > window_size:
            continue
        for block in stage.blocks:
            block.window_size, block.shift_size = min(grid), 0
            heads = block.attention.num_attention_heads
            block.attention.relative_position_bias = SwinRelativePositionBias(heads, (min(grid), min(grid)))


class AppearanceBackbone(nn.Module):
    """Swin Transformer returning the pre-merging feature map of every stage, as CFLD's appearance encoder."""

    def __init__(self, cfg: AppearanceConfig, image_hw: tuple[int, int]) -> None:
        super().__init__()
        from transformers import SwinConfig, SwinModel

        if len(cfg.depths) != len(cfg.num_heads):
            raise ValueError(f"appearance: {len(cfg.depths)} depths but {len(cfg.num_heads)} head counts; give one per stage")
        config = SwinConfig(image_size=list(image_hw), patch_size=4, num_channels=3, embed_dim=cfg.embed_dim,
                            depths=list(cfg.depths), num_heads=list(cfg.num_heads), window_size=cfg.window_size,
                            drop_path_rate=cfg.drop_path_rate, use_absolute_embeddings=False)
        swin = SwinModel(config, add_pooling_layer=False)
        self.embeddings = swin.embeddings  # patch embedding + LayerNorm
        self.encoder = swin.encoder  # the stages; SwinModel's final LayerNorm is not used (CFLD: LAST_NORM False)
        self.image_hw = tuple(image_hw)
        self.grids = stage_grids(self.image_hw, len(cfg.depths))
        self.channels = [cfg.embed_dim * 2**stage for stage in range(len(cfg.depths))]
        fit_windows(self.encoder, self.grids, cfg.window_size)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each Swin stage in the backward pass (non-reentrant, so gradients reach every block)."""
        self.encoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) in [-1, 1] -> one (B, C_s, h_s, w_s) map per stage, before its patch merging."""
        if tuple(images.shape[-2:]) != self.image_hw:
            raise ValueError(f"appearance images are {tuple(images.shape[-2:])}; this backbone was built for {self.image_hw}")
        tokens, grid = self.embeddings(images)
        encoded = self.encoder(tokens, grid, output_hidden_states=True, output_hidden_states_before_downsampling=True)
        return list(encoded.reshaped_hidden_states[1:])  # [0] is the patch embedding itself
