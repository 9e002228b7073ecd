"""Reference attention: a copy of the UNet reads a reference latent once; its tokens join the UNet's self-attention.

The reference network of Animate Anyone (Hu et al. 2023), used by MCLD (CVPR 2025: the source's SMPL texture) and by
IDM-VTON's garment network (the garment photo; atelier's try-on with net.fusion reference-attention):
- the reference UNet runs on the reference latent at timestep 0, once per image (its features do not depend on the
  denoising step). Forward hooks on every transformer block's `norm1` capture that
  block's self-attention input (B, M, C);
- in the denoising UNet, each transformer block's attn1 takes its queries from its own tokens and its keys and values
  from [own tokens; the matching reference block's tokens]. Blocks are matched by position in one fixed traversal
  (down blocks, mid block, up blocks; attentions, then transformer blocks, in module order), the same in both UNets:
  SD 1.5 has 16 (6 down, 1 mid, 9 up). Without reference tokens (None) attn1 is plain self-attention: the
  unconditional branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from atelier.diffusion.attention import attend, check_tokens

Stage = Literal["down", "mid", "up"]


@dataclass(frozen=True)
class TransformerBlock:
    """One transformer block of a UNet: module path, the block itself, and its stage."""

    path: str
    block: nn.Module
    stage: Stage


def transformer_blocks(unet: nn.Module) -> list[TransformerBlock]:
    """Every transformer block of a diffusers UNet in the matching order: down blocks, mid block, up blocks."""
    parts: list[tuple[str, nn.Module, Stage]] = [(f"down_blocks.{i}", b, "down") for i, b in enumerate(unet.down_blocks)]
    if unet.mid_block is not None:
        parts.append(("mid_block", unet.mid_block, "mid"))
    parts += [(f"up_blocks.{i}", b, "up") for i, b in enumerate(unet.up_blocks)]
    found = []
    for prefix, part, stage in parts:
        for j, transformer in enumerate(getattr(part, "attentions", None) or []):
            for k, block in enumerate(transformer.transformer_blocks):
                found.append(TransformerBlock(f"{prefix}.attentions.{j}.transformer_blocks.{k}", block, stage))
    return found


def check_reference_block(block: TransformerBlock) -> None:
    """The captured `norm1` output is the self-attention's input only for SD's plain layer-norm blocks."""
    module = block.block
    if getattr(module, "norm_type", "layer_norm") != "layer_norm" or getattr(module, "pos_embed", None) is not None:
        raise ValueError(f"{block.path}: a transformer block with norm_type {module.norm_type!r} or a positional embedding; "
                         "reference features need SD's layer-norm blocks (norm1's output is attn1's input)")
    if getattr(module, "only_cross_attention", False):
        raise ValueError(f"{block.path}: attn1 is a cross-attention; reference features need self-attention")


def capture_reference_tokens(unet: nn.Module, latent: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor]:
    """Run the reference UNet once at timestep 0 on `latent`; every transformer block's `norm1` output, in order.

    The hooks live only for this call, so gradient checkpointing's recomputation in the backward pass captures nothing.
    """
    blocks = transformer_blocks(unet)
    captured: list[torch.Tensor | None] = [None] * len(blocks)

    def keeper(index: int):
        def keep(module, inputs, output):
            captured[index] = output
        return keep

    handles = [b.block.norm1.register_forward_hook(keeper(i)) for i, b in enumerate(blocks)]
    try:
        timestep = torch.zeros(len(latent), device=latent.device, dtype=torch.long)
        unet(latent, timestep, encoder_hidden_states=context)  # its output is not used: only the blocks' inputs are
    finally:
        for handle in handles:
            handle.remove()
    missing = [b.path for b, tokens in zip(blocks, captured) if tokens is None]
    if missing:
        raise RuntimeError(f"the reference UNet's forward skipped transformer blocks {missing[:3]}")
    return captured


class ReferenceSelfAttnProcessor:
    """attn1 of one denoising transformer block: queries from its tokens, keys/values from [its tokens; reference].

    `reference` (B, M, C) is set by the network's forward before every UNet call and kept until the next one (gradient
    checkpointing recomputes with the same tensor); None is plain self-attention. `keep` (B,) bool: the rows that see
    the reference (a dropped row attends to its own tokens only: exactly plain self-attention); None: every row.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.reference: torch.Tensor | None = None
        self.keep: torch.Tensor | None = None

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        check_tokens(hidden_states, attention_mask, "ReferenceSelfAttnProcessor")
        tokens, mask = hidden_states, None
        if self.reference is not None:
            tokens = torch.cat([hidden_states, self.reference.to(hidden_states.dtype)], dim=1)
            if self.keep is not None:
                mask = torch.zeros(len(tokens), 1, 1, tokens.shape[1], dtype=hidden_states.dtype, device=tokens.device)
                mask[~self.keep.to(tokens.device), :, :, hidden_states.shape[1]:] = float("-inf")
        out = attend(attn, attn.to_q(hidden_states), attn.to_k(tokens), attn.to_v(tokens), mask)
        return attn.to_out[1](attn.to_out[0](out))  # projection, dropout
