"""MCLD's multi-focal cross-attention: per-stage CLIP contexts plus IP-Adapter-style face tokens, in every attn2.

MCLD (CVPR 2025) replaces the text prompt by CLIP image embeddings (`CLIPVisionModelWithProjection.image_embeds`, one
token each) chosen by UNet stage, and adds face tokens through decoupled projections (IP-Adapter, Ye et al. 2023):
- down blocks read [source token], the mid block [source token; texture token], up blocks [texture token];
- every attn2 has its own `to_k_ip` / `to_v_ip` (Linear(context_dim, inner_dim, bias=False)) for the 16 face tokens:
  out = to_out(attention(q, to_k(context), to_v(context)) + scale * attention(q, to_k_ip(face), to_v_ip(face))),
  scale 0.5.
The processor is an nn.Module set as `attn2.processor`, so its projections are named
`...attn2.processor.to_k_ip.weight` in the UNet's state dict, as in MCLD's released `denoising_unet.pth`. A fresh
processor starts like IP-Adapter's training: `to_k_ip` / `to_v_ip` copy the attention's `to_k` / `to_v`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Stage = Literal["down", "mid", "up"]


def attend(attn, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Multi-head scaled-dot-product attention with a diffusers Attention's head count and scale: (B, N, inner)."""
    batch, head_dim = query.shape[0], query.shape[-1] // attn.heads
    query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
    out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
    return out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)


def check_plain_attention(attn, path: str) -> None:
    """MCLD's processors reimplement plain SD attention only: refuse modules with extra norms, residuals or rescaling."""
    extras = [name for name in ("group_norm", "spatial_norm", "norm_cross") if getattr(attn, name, None) is not None]
    if extras or attn.residual_connection or attn.rescale_output_factor != 1.0:
        raise ValueError(f"{path}: attention with {extras or 'a residual/rescale'} is not supported by MCLD's processors")


def check_tokens(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, what: str) -> None:
    """Refuse what the processors do not implement: masks and (B, C, H, W) inputs."""
    if attention_mask is not None or hidden_states.ndim != 3:
        raise ValueError(f"{what} handles (B, N, C) tokens without an attention mask (SD 1.x attention)")


class MultiFocalCrossAttnProcessor(nn.Module):
    """attn2 of one transformer block: its stage's CLIP context, plus `scale` x the attention over the face tokens.

    `context` (B, N, D) and `face` (B, F, D) are set by `MCLDNet.forward` before every UNet call and kept until the
    next one, so gradient checkpointing's recomputation sees the same tensors; the UNet's own encoder_hidden_states
    are not read. `face` None (or scale 0) leaves the face branch out.
    """

    def __init__(self, attn, stage: Stage, scale: float) -> None:
        super().__init__()
        self.stage = stage
        self.scale = scale
        self.to_k_ip = nn.Linear(attn.to_k.in_features, attn.to_k.out_features, bias=False)
        self.to_v_ip = nn.Linear(attn.to_v.in_features, attn.to_v.out_features, bias=False)
        with torch.no_grad():
            self.to_k_ip.weight.copy_(attn.to_k.weight)
            self.to_v_ip.weight.copy_(attn.to_v.weight)
        self.context: torch.Tensor | None = None
        self.face: torch.Tensor | None = None

    def forward(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        check_tokens(hidden_states, attention_mask, "MultiFocalCrossAttnProcessor")
        if self.context is None:
            raise ValueError("MultiFocalCrossAttnProcessor has no context: run the UNet through MCLDNet.forward")
        query = attn.to_q(hidden_states)
        context = self.context.to(query.dtype)
        out = attend(attn, query, attn.to_k(context), attn.to_v(context))
        if self.face is not None and self.scale != 0:
            face = self.face.to(query.dtype)
            out = out + self.scale * attend(attn, query, self.to_k_ip(face), self.to_v_ip(face))
        return attn.to_out[1](attn.to_out[0](out))  # projection, dropout
