"""The StableVITON-style try-on network around a diffusers UNet: 13-channel input, garment encoder, zero cross-attention.

StableVITON (Kim et al., CVPR 2024), as UniFashion's generation module uses it:
- the UNet reads 13 channels: the noisy latent (4), the masked person's latent (4), the inpainting mask at the latent
  grid (1) and the DensePose image's latent (4). Its input convolution is widened from the base's: a text-to-image
  UNet's 4 channels are copied to the noisy-latent slots, an inpainting UNet's 9 (noisy, mask, masked image) to theirs;
  every other new input weight starts at zero, so at step 0 the network is the base model;
- a garment encoder, a trainable copy of the UNet's encoder (input convolution, time embedding, down blocks, middle
  block, same weights at the start), reads the control image's latent: the garment photo for try-on, the garment
  sketch for design;
- zero cross-attention: in every up-block transformer, the self-attention's output s becomes
  s + W_o attention(q = W_q s, k = W_k g, v = W_v g), g the garment encoder's features at the same grid; W_o starts
  at zero, so the garment reaches the decoder gradually as training goes.

`garment_input` chooses what the encoder reads:
- "noisy" (StableVITON's ControlNet-style encoder): the UNet's 13-channel input at the step's timestep, with the
  control latent added after the input convolution through a zero-initialised convolution. Its features change with
  every denoising step, so it runs once per step;
- "garment" (the garment network of IDM-VTON's design): the control latent alone at timestep 0, so its features are
  the same at every step and sampling computes them once per image.

`fusion` "reference-attention" replaces the encoder copy and the zero cross-attention by IDM-VTON's garment network:
a copy of the whole UNet reads the control latent at timestep 0 (once per image) and keeps the input of each of its
self-attentions; the UNet's self-attention at the same block attends to its own tokens and to those (keys and values
through its own projections). The copy starts as the UNet, so its tokens are readable from the first step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from atelier.diffusion.attention import attend, check_plain_attention, check_tokens
from atelier.diffusion.reference import (
    ReferenceSelfAttnProcessor,
    capture_reference_tokens,
    check_reference_block,
    transformer_blocks,
)

IN_CHANNELS = 13  # noisy latent 4 + masked person latent 4 + mask 1 + DensePose latent 4
LATENT = 4
GarmentInput = Literal["noisy", "garment"]


@dataclass
class TryOnNetConfig:
    """The try-on network's parts (defaults: StableVITON's design on an SD-1.5-sized UNet)."""

    garment_input: GarmentInput = "noisy"
    attention_head_dim: int = 64  # heads of the zero cross-attention are its width / this (SD 1.5: 320 / 64 = 5)
    # how the garment reaches the UNet: "zero-cross-attention" (StableVITON: the encoder copy's features through the
    # zero cross-attention of the up blocks) or "reference-attention" (IDM-VTON's garment network: a copy of the whole
    # UNet reads the control latent at timestep 0, and every self-attention of the UNet attends to its own tokens and
    # to the copy's tokens at the same block; needs garment_input "garment")
    fusion: Literal["zero-cross-attention", "reference-attention"] = "zero-cross-attention"
    encoder_trainable: bool = True  # the garment encoder / garment network trains (StableVITON); False: frozen (IDM-VTON)
    unet_trainable: list[str] = field(default_factory=lambda: ["*"])  # fnmatch patterns over the UNet's parameter names


def widen_conv_in(unet: nn.Module, channels: int = IN_CHANNELS) -> None:
    """Give the UNet a `channels`-input convolution (in place, config included): a 4-channel base's weights go to the
    noisy latent, a 9-channel inpainting base's (noisy 0-3, mask 4, masked image 5-8) to the noisy latent, masked
    person (4-7) and mask (8) slots; every other input starts at zero. A UNet that already reads `channels` is kept."""
    old = unet.conv_in
    if old.in_channels == channels:
        return
    if old.in_channels not in (LATENT, 9):
        raise ValueError(f"the base UNet reads {old.in_channels} channels; expected 4 (text-to-image) or 9 (inpainting)")
    new = nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding).to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.bias.copy_(old.bias)
        new.weight[:, :LATENT] = old.weight[:, :LATENT]
        if old.in_channels == 9:
            new.weight[:, 4:8] = old.weight[:, 5:9]  # masked image latent
            new.weight[:, 8:9] = old.weight[:, 4:5]  # mask
    unet.conv_in = new
    unet.register_to_config(in_channels=channels)


def _pre_downsample(block, hidden: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the block's output, its feature before the downsampler) for one diffusers down block."""
    if getattr(block, "has_cross_attention", False):
        hidden, states = block(hidden_states=hidden, temb=emb, encoder_hidden_states=context)
    else:
        hidden, states = block(hidden_states=hidden, temb=emb)
    return hidden, states[-2] if getattr(block, "downsamplers", None) is not None else states[-1]


class GarmentEncoder(nn.Module):
    """A trainable copy of the UNet's encoder: {(h, w) grid: features (B, C, h, w)} of the control latent."""

    def __init__(self, unet: nn.Module, garment_input: GarmentInput) -> None:
        super().__init__()
        self.garment_input = garment_input
        self.conv_in = copy.deepcopy(unet.conv_in)
        if garment_input == "garment" and self.conv_in.in_channels != LATENT:  # reads the control latent itself
            self.conv_in.weight = nn.Parameter(self.conv_in.weight[:, :LATENT].detach().clone())
            self.conv_in.in_channels = LATENT
        self.hint_in = None
        if garment_input == "noisy":  # the control latent joins after the input convolution, from zero
            self.hint_in = nn.Conv2d(LATENT, self.conv_in.out_channels, 3, padding=1)
            nn.init.zeros_(self.hint_in.weight)
            nn.init.zeros_(self.hint_in.bias)
        self.time_proj = copy.deepcopy(unet.time_proj)
        self.time_embedding = copy.deepcopy(unet.time_embedding)
        self.down_blocks = copy.deepcopy(unet.down_blocks)
        self.mid_block = copy.deepcopy(unet.mid_block)

    def forward(self, control: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                unet_input: torch.Tensor | None = None) -> dict[tuple[int, int], torch.Tensor]:
        """Features of `control` (B, 4, h, w) per grid. "noisy": `unet_input` (B, 13, h, w) and `timestep` are read;
        "garment": neither (timestep 0)."""
        batch = control.shape[0]
        if self.garment_input == "garment":
            timestep, hidden = torch.zeros(batch, device=control.device), self.conv_in(control)
        else:
            if unet_input is None:
                raise ValueError("the noisy-input garment encoder reads the UNet's input: pass unet_input")
            hidden = self.conv_in(unet_input) + self.hint_in(control)
        timestep = torch.as_tensor(timestep, device=control.device).reshape(-1).expand(batch)
        emb = self.time_embedding(self.time_proj(timestep).to(hidden.dtype))
        features = {}
        for block in self.down_blocks:
            hidden, feature = _pre_downsample(block, hidden, emb, context)
            features.setdefault(tuple(feature.shape[-2:]), feature)
        if self.mid_block is not None:
            hidden = self.mid_block(hidden, emb, encoder_hidden_states=context)
            features.setdefault(tuple(hidden.shape[-2:]), hidden)
        return features


class ZeroCrossAttention(nn.Module):
    """Cross-attention from a decoder's self-attention output to garment tokens; its output projection starts at zero."""

    def __init__(self, dim: int, garment_dim: int, head_dim: int) -> None:
        super().__init__()
        self.heads = max(1, dim // head_dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(garment_dim, dim, bias=False)
        self.to_v = nn.Linear(garment_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, hidden: torch.Tensor, garment: torch.Tensor) -> torch.Tensor:
        """hidden (B, N, dim), garment tokens (B, M, garment_dim) -> (B, N, dim)."""
        batch, dim = hidden.shape[0], self.to_q.out_features
        q, k, v = self.to_q(hidden), self.to_k(garment), self.to_v(garment)
        q, k, v = (x.view(batch, -1, self.heads, dim // self.heads).transpose(1, 2) for x in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(batch, -1, dim))


class GarmentSelfAttnProcessor:
    """An up-block transformer's self-attention (SDPA) followed by the zero cross-attention to the garment tokens.

    The tokens are set by `TryOnNet.forward` before every UNet call and kept until the next one, so gradient
    checkpointing's recomputation sees the same tensor; without tokens (None) it is plain self-attention.
    """

    def __init__(self, cross: ZeroCrossAttention, level: int) -> None:
        self.cross = cross
        self.level = level  # resolution level of the transformer: which grid of garment features it reads
        self.tokens: torch.Tensor | None = None
        self.keep: torch.Tensor | None = None  # (B,) bool: rows that see the garment (None: all)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        check_tokens(hidden_states, attention_mask, "GarmentSelfAttnProcessor")
        out = attend(attn, attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states))
        out = attn.to_out[1](attn.to_out[0](out))  # projection, dropout
        if self.tokens is not None:
            garment = self.cross(out, self.tokens.to(out.dtype))
            out = out + (garment if self.keep is None else garment * self.keep[:, None, None].to(out.dtype))
        return out


class GarmentNet(nn.Module):
    """IDM-VTON's garment network: a trainable copy of the whole UNet reading the control latent at timestep 0;
    forward returns the input of every transformer block's self-attention, in `transformer_blocks` order
    (diffusion.reference). Its output convolutions are unused (frozen)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = copy.deepcopy(unet)
        conv = self.unet.conv_in
        if conv.in_channels != LATENT:
            conv.weight = nn.Parameter(conv.weight[:, :LATENT].detach().clone())
            conv.in_channels = LATENT
        for block in transformer_blocks(self.unet):
            check_reference_block(block)

    def freeze_unused(self) -> None:
        for module in (self.unet.conv_norm_out, self.unet.conv_out):
            if module is not None:
                module.requires_grad_(False)

    def forward(self, control: torch.Tensor, timestep, context: torch.Tensor, unet_input=None) -> list[torch.Tensor]:
        return capture_reference_tokens(self.unet, control, context)


def up_block_self_attentions(unet: nn.Module) -> list[tuple[str, int]]:
    """(module path of attn1, resolution level) of every up-block transformer; level 0 is the latent grid."""
    found = []
    for i, block in enumerate(unet.up_blocks):
        for j, transformer in enumerate(getattr(block, "attentions", None) or []):
            for k in range(len(transformer.transformer_blocks)):
                found.append((f"up_blocks.{i}.attentions.{j}.transformer_blocks.{k}.attn1", len(unet.up_blocks) - 1 - i))
    return found


def level_grid(latent_hw: tuple[int, int], level: int) -> tuple[int, int]:
    """The grid of a resolution level: the latent grid halved `level` times, rounding up (stride-2 convs, padding 1)."""
    height, width = latent_hw
    for _ in range(level):
        height, width = (height + 1) // 2, (width + 1) // 2
    return height, width


class TryOnNet(nn.Module):
    """The try-on network: `encode_control` (once per image, or per step for "noisy"), then `forward` per step."""

    def __init__(self, cfg: TryOnNetConfig, unet: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        widen_conv_in(unet)
        self.unet = unet
        self.cross_attention = nn.ModuleList()
        self.processors: list[GarmentSelfAttnProcessor] = []
        self.references: list[ReferenceSelfAttnProcessor] = []
        if cfg.fusion == "reference-attention":
            if cfg.garment_input != "garment":
                raise ValueError('fusion "reference-attention" reads the control latent alone: set garment_input "garment"')
            self.garment_encoder = GarmentNet(unet)
            for block in transformer_blocks(unet):
                check_reference_block(block)
                check_plain_attention(block.block.attn1, f"{block.path}.attn1")
                self.references.append(ReferenceSelfAttnProcessor(block.path))
                block.block.attn1.set_processor(self.references[-1])
            self.paths = []
            self.set_trainable()
            return
        self.garment_encoder = GarmentEncoder(unet, cfg.garment_input)
        widths = list(unet.config.block_out_channels)
        self.paths = up_block_self_attentions(unet)
        for path, level in self.paths:
            attn = unet.get_submodule(path)
            check_plain_attention(attn, path)
            cross = ZeroCrossAttention(attn.to_q.in_features, widths[min(level, len(widths) - 1)], cfg.attention_head_dim)
            self.cross_attention.append(cross)
            self.processors.append(GarmentSelfAttnProcessor(cross, level))
            attn.set_processor(self.processors[-1])
        self.set_trainable()

    def set_trainable(self) -> None:
        """The garment encoder and the zero cross-attention train; of the UNet, the parameters matching cfg.unet_trainable."""
        self.requires_grad_(True)
        for name, param in self.unet.named_parameters():
            param.requires_grad_(any(fnmatch(name, pattern) for pattern in self.cfg.unet_trainable))
        if isinstance(self.garment_encoder, GarmentNet):
            self.garment_encoder.freeze_unused()
        if not self.cfg.encoder_trainable:
            self.garment_encoder.requires_grad_(False)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    def unet_input(self, noisy: torch.Tensor, person: torch.Tensor, mask: torch.Tensor, densepose: torch.Tensor) -> torch.Tensor:
        """The 13 channels: noisy latent, masked person latent, mask at the latent grid, DensePose latent."""
        return torch.cat([noisy, person, mask.to(noisy.dtype), densepose], dim=1)

    def encode_control(self, control: torch.Tensor, context: torch.Tensor, timestep: torch.Tensor | None = None,
                       unet_input: torch.Tensor | None = None) -> dict[tuple[int, int], torch.Tensor]:
        """The garment encoder's features of the control latent (see GarmentEncoder.forward)."""
        return self.garment_encoder(control, timestep if timestep is not None else 0, context, unet_input)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                garment: dict | None = None, keep: torch.Tensor | None = None):
        """One UNet evaluation on the 13-channel `sample`; `garment`: the garment encoder's features per grid (zero
        cross-attention) or its tokens per self-attention, in transformer_blocks order (reference attention); None: the
        garment is ignored.
        `keep` (B,) bool: the rows that see the garment (garment dropout in training); None: every row."""
        if self.references and garment is not None and len(garment) != len(self.references):
            raise ValueError(f"{len(garment)} garment token sets for {len(self.references)} self-attentions")
        for index, processor in enumerate(self.references):
            processor.reference, processor.keep = (None, None) if garment is None else (garment[index], keep)
        for processor in self.processors:
            processor.keep = keep
        latent_hw = tuple(sample.shape[-2:])
        for processor in self.processors:
            if garment is None:
                processor.tokens = None
                continue
            grid = level_grid(latent_hw, processor.level)
            feature = garment.get(grid)
            if feature is None:
                raise ValueError(f"no garment feature at grid {grid}; the encoder gave {sorted(garment)}")
            processor.tokens = feature.flatten(2).transpose(1, 2)
        return self.unet(sample, timestep, encoder_hidden_states)

    def extra_state_dict(self) -> dict[str, torch.Tensor]:
        """Every parameter outside the UNet (garment encoder, zero cross-attention): what tryon.safetensors holds."""
        return {name: value for name, value in self.state_dict().items() if not name.startswith("unet.")}
