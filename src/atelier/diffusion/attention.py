"""What the custom attention processors (try-on, MCLD) share: multi-head attention with a diffusers Attention's heads
and scale, and the checks that a module is the plain SD 1.x attention they reimplement."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attend(attn, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head scaled-dot-product attention with `attn`'s head count and scale: (B, N, inner). `mask`: an additive
    (B, 1, 1, M) mask over the keys (-inf: not attended)."""
    batch, head_dim = query.shape[0], query.shape[-1] // attn.heads
    query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=attn.scale)
    return out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)


def check_plain_attention(attn, path: str) -> None:
    """The processors reimplement plain SD attention only: refuse modules with extra norms, residuals or rescaling."""
    extras = [name for name in ("group_norm", "spatial_norm", "norm_cross") if getattr(attn, name, None) is not None]
    if extras or attn.residual_connection or attn.rescale_output_factor != 1.0:
        raise ValueError(f"{path}: attention with {extras or 'a residual/rescale'} is not supported by atelier's processors")


def check_tokens(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, what: str) -> None:
    """Refuse what the processors do not implement: masks and (B, C, H, W) inputs."""
    if attention_mask is not None or hidden_states.ndim != 3:
        raise ValueError(f"{what} handles (B, N, C) tokens without an attention mask (SD 1.x attention)")
