"""MCLD's face projector: a Perceiver resampler turning one ArcFace embedding into the face tokens of every attn2.

The resampler of Flamingo (Alayrac et al. 2022) as IP-Adapter-Plus uses it (Ye et al. 2023): learned queries read the
projected input through `depth` layers, each a cross-attention of the queries over [inputs; queries] (both
LayerNorm'd first, residual) and a feed-forward (LayerNorm -> Linear x mult -> GELU -> Linear, residual), then an
output projection to the UNet's context width and a LayerNorm. MCLD's sizes: width 1280, depth 4, 20 heads of 64,
16 queries, the raw 512-d antelopev2 ArcFace embedding in (zeros when no face is found) and 16 x 768 tokens out.
The projections inside the layers have no bias, as in IP-Adapter's resampler; release.py maps its names to ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class FaceProjectorConfig:
    """The resampler's sizes (defaults: MCLD's); the output width is the UNet's cross_attention_dim."""

    embedding_dim: int = 512  # ArcFace (antelopev2 glintr100) embedding
    dim: int = 1280
    depth: int = 4
    heads: int = 20
    head_dim: int = 64
    num_queries: int = 16
    ff_mult: int = 4


class QueryAttention(nn.Module):
    """Attention of the queries over [inputs; queries], both LayerNorm'd; projections without bias."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.norm_inputs = nn.LayerNorm(dim)
        self.norm_queries = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, inputs: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """inputs (B, N, dim), queries (B, Q, dim) -> (B, Q, dim), the update to add to the queries."""
        inputs, queries = self.norm_inputs(inputs), self.norm_queries(queries)
        both = torch.cat([inputs, queries], dim=1)  # the queries also attend to themselves
        query, key, value = self.to_q(queries), self.to_k(both), self.to_v(both)
        batch = query.shape[0]
        query, key, value = (x.view(batch, x.shape[1], self.heads, -1).transpose(1, 2) for x in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value)  # 1 / sqrt(head_dim), as the resampler's split scale
        return self.to_out(out.transpose(1, 2).reshape(batch, -1, self.to_out.in_features))


class FeedForward(nn.Module):
    """LayerNorm -> Linear(dim, mult * dim) -> GELU -> Linear(mult * dim, dim), no biases in the Linears."""

    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mult, bias=False)
        self.fc2 = nn.Linear(dim * mult, dim, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(hidden))))


class ResamplerLayer(nn.Module):
    """One resampler layer: query attention then feed-forward, each added to the queries."""

    def __init__(self, dim: int, heads: int, head_dim: int, ff_mult: int) -> None:
        super().__init__()
        self.attention = QueryAttention(dim, heads, head_dim)
        self.feed_forward = FeedForward(dim, ff_mult)

    def forward(self, inputs: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        queries = queries + self.attention(inputs, queries)
        return queries + self.feed_forward(queries)


class FaceProjector(nn.Module):
    """(B, embedding_dim) face embeddings -> (B, num_queries, context_dim) face tokens (Perceiver resampler)."""

    def __init__(self, cfg: FaceProjectorConfig, context_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.queries = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.dim) / cfg.dim**0.5)
        self.proj_in = nn.Linear(cfg.embedding_dim, cfg.dim)
        self.layers = nn.ModuleList([ResamplerLayer(cfg.dim, cfg.heads, cfg.head_dim, cfg.ff_mult) for _ in range(cfg.depth)])
        self.proj_out = nn.Linear(cfg.dim, context_dim)
        self.norm_out = nn.LayerNorm(context_dim)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        if embedding.ndim != 2 or embedding.shape[1] != self.cfg.embedding_dim:
            raise ValueError(f"face embedding of shape {tuple(embedding.shape)}: expected (batch, {self.cfg.embedding_dim}), "
                             "the raw ArcFace embedding (zeros where no face was found)")
        inputs = self.proj_in(embedding.unsqueeze(1))  # one input token per image
        queries = self.queries.expand(len(embedding), -1, -1)
        for layer in self.layers:
            queries = layer(inputs, queries)
        return self.norm_out(self.proj_out(queries))
