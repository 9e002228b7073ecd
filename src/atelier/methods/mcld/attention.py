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

import torch
from torch import nn

from atelier.diffusion.attention import attend, check_tokens
from atelier.diffusion.reference import Stage


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
