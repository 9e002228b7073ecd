"""CFLD's perception-refined decoder: learnable queries read the source's last Swin stage and become the UNet's prompt.

Lu et al., CVPR 2024: 16 learnable queries of the UNet's context width (768 for SD 1.5) pass 8 blocks of
cross-attention (to the last-stage tokens plus a learnable position embedding) -> self-attention -> GEGLU feed-forward,
each pre-normalised, with a learnable query position embedding added before both attentions (24 heads at full size).
The output replaces the text embedding as the UNet's cross-attention context, so the coarse "what does this person
wear" semantics reach every UNet layer. Parameter names follow the released checkpoint (`query_feat`, `pos_embed`,
`kv_pos_embed`, `blocks.N.{norm1,attn1,norm2,attn2,norm3,ff}`), so it loads by a prefix rename.
"""

from __future__ import annotations

import torch
from torch import nn


class DecoderBlock(nn.Module):
    """Cross-attention to the image tokens, then self-attention among the queries, then a GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, feature_dim: int) -> None:
        super().__init__()
        from diffusers.models.attention import FeedForward
        from diffusers.models.attention_processor import Attention

        if dim % heads:
            raise ValueError(f"decoder: width {dim} is not divisible by {heads} heads")
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=dim // heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(query_dim=dim, cross_attention_dim=feature_dim, heads=heads, dim_head=dim // heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")

    def forward(self, queries: torch.Tensor, query_pos: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        queries = queries + query_pos
        queries = queries + self.attn2(self.norm2(queries), encoder_hidden_states=features)  # read the image
        queries = queries + query_pos
        queries = queries + self.attn1(self.norm1(queries))  # queries exchange what they read
        return queries + self.ff(self.norm3(queries))


class PerceptionRefinedDecoder(nn.Module):
    """Learnable queries -> N decoder blocks over the last Swin stage's tokens -> (B, queries, dim) UNet context."""

    def __init__(self, num_queries: int, dim: int, depth: int, heads: int, feature_dim: int, feature_tokens: int) -> None:
        super().__init__()
        self.query_feat = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.kv_pos_embed = nn.Parameter(torch.randn(1, feature_tokens, feature_dim) * 0.02)
        self.blocks = nn.ModuleList([DecoderBlock(dim, heads, feature_dim) for _ in range(depth)])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) last-stage feature map -> (B, num_queries, dim)."""
        tokens = features.flatten(2).transpose(1, 2)  # (B, h*w, C), row-major like the Swin tokens
        if tokens.shape[1] != self.kv_pos_embed.shape[1]:
            raise ValueError(f"decoder: {tokens.shape[1]} image tokens, built for {self.kv_pos_embed.shape[1]}; "
                             "the appearance image size must match the one the model was built for")
        tokens = tokens + self.kv_pos_embed
        batch = features.shape[0]
        queries = self.query_feat.expand(batch, -1, -1)
        query_pos = self.pos_embed.expand(batch, -1, -1)
        for block in self.blocks:
            queries = block(queries, query_pos, tokens)
        return queries
