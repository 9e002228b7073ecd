"""CFLD assembled around a diffusers UNet: appearance backbone, decoder, hybrid attention, pose adapter, null prompt.

Coarse-to-Fine Latent Diffusion (Lu et al., CVPR 2024), conditioning a frozen SD 1.x UNet through three doors:
- the cross-attention context: the perception-refined decoder's queries (or the learnable null prompt, for the
  unconditional branch and for 20% of training examples);
- the down blocks: the pose adapter's features, through `down_intrablock_additional_residuals` (T2I-Adapter path);
- the up blocks' cross-attention queries: the hybrid-granularity attention's biases, through `QueryBiasAttnProcessor`
  installed on the targeted `attn2` modules.
Trainable UNet parameters are chosen by name patterns (`unet_trainable`); the default is CFLD's choice, the `to_k`
and `to_v` of every up-block cross-attention (its TRAINABLE_BLOCK_IDX 3..11 on SD 1.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatch

import torch
import torch.nn.functional as F
from torch import nn

from atelier.methods.cfld.appearance import AppearanceBackbone, AppearanceConfig
from atelier.methods.cfld.decoder import PerceptionRefinedDecoder
from atelier.methods.cfld.hybrid_attention import HybridGranularityAttention, HybridTarget
from atelier.methods.cfld.pose_adapter import PoseAdapter

PAPER_UNET_TRAINABLE = ["up_blocks.*.attn2.to_k.*", "up_blocks.*.attn2.to_v.*"]


@dataclass
class CFLDConfig:
    """CFLD's parts (defaults: the paper at SD 1.5 size; the context width is the UNet's cross_attention_dim)."""

    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    num_queries: int = 16
    decoder_depth: int = 8
    decoder_heads: int = 24
    hybrid_depth: int = 4
    hybrid_head_dim: int = 32
    hybrid_blocks: list[int] | None = None  # CFLD indices of targeted up-block transformers; None = all (3..11 on SD 1.5)
    pose_downscale: int = 4
    pose_adapter_channels: list[int] | None = None  # None = the UNet's block widths but the last (320/640/1280)
    unet_trainable: list[str] = field(default_factory=lambda: list(PAPER_UNET_TRAINABLE))  # fnmatch patterns


@dataclass
class Conditioning:
    """What the UNet is conditioned on for a batch: context (B, Q, D), pose residuals, {CFLD index: query bias}."""

    context: torch.Tensor
    pose_features: list[torch.Tensor]
    query_bias: dict[int, torch.Tensor]


@dataclass(frozen=True)
class UpTransformer:
    """One up-block transformer of the UNet: CFLD index, module path of its cross-attention, level, query width."""

    index: int
    attn2: str
    level: int
    channels: int


def up_block_transformers(unet: nn.Module) -> list[UpTransformer]:
    """Every up-block transformer in CFLD's numbering (i * len(attentions) + j), highest index first."""
    found = []
    for i, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None) or []
        for j, transformer in enumerate(attentions):
            if len(transformer.transformer_blocks) != 1:
                raise ValueError("CFLD expects one transformer block per up-block attention (as SD 1.x has)")
            path = f"up_blocks.{i}.attentions.{j}.transformer_blocks.0.attn2"
            channels = transformer.transformer_blocks[0].attn2.to_q.out_features
            found.append(UpTransformer(i * len(attentions) + j, path, len(unet.up_blocks) - 1 - i, channels))
    return sorted(found, key=lambda t: -t.index)


class QueryBiasAttnProcessor:
    """Scaled-dot-product attention adding `bias` (B, N, C) to the queries after `to_q` (CFLD's hybrid attention).

    The bias is set by `CFLD.forward` before every UNet call and kept until the next one, so gradient checkpointing's
    recomputation during the backward pass sees the same tensor.
    """

    def __init__(self) -> None:
        self.bias: torch.Tensor | None = None

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if attention_mask is not None or hidden_states.ndim != 3:
            raise ValueError("QueryBiasAttnProcessor handles (B, N, C) tokens without an attention mask (SD 1.x cross-attention)")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = attn.to_q(hidden_states)
        if self.bias is not None:
            query = query + self.bias.to(query.dtype)
        key, value = attn.to_k(context), attn.to_v(context)
        batch, head_dim = query.shape[0], query.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))  # projection, dropout


def _check_plain_cross_attention(attn, path: str) -> None:
    """The processor reimplements plain SD cross-attention only: refuse modules with extra norms or residuals."""
    extras = [name for name in ("group_norm", "spatial_norm", "norm_cross") if getattr(attn, name, None) is not None]
    if extras or attn.residual_connection or attn.rescale_output_factor != 1.0:
        raise ValueError(f"{path}: cross-attention with {extras or 'a residual/rescale'} is not supported by CFLD's query bias")


class CFLD(nn.Module):
    """The CFLD model around `unet`: `condition(source, pose)` then `forward(latents, t, context, ...)` per step."""

    def __init__(self, cfg: CFLDConfig, unet: nn.Module, appearance_hw: tuple[int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.unet = unet
        self.appearance = AppearanceBackbone(cfg.appearance, appearance_hw)
        dim = unet.config.cross_attention_dim
        self.decoder = PerceptionRefinedDecoder(cfg.num_queries, dim, cfg.decoder_depth, cfg.decoder_heads,
                                                self.appearance.channels[-1], self.appearance.grids[-1][0] * self.appearance.grids[-1][1])
        self.hybrid_attention = HybridGranularityAttention(self._hybrid_targets(), cfg.hybrid_depth, cfg.hybrid_head_dim)
        channels = cfg.pose_adapter_channels or list(unet.config.block_out_channels[:-1])
        self.pose_adapter = PoseAdapter(channels, cfg.pose_downscale)
        self.null_prompt = nn.Parameter(torch.randn(1, cfg.num_queries, dim))  # CFLD's `learnable_vector`
        self.processors: dict[int, QueryBiasAttnProcessor] = {}
        for target in self.hybrid_attention.targets:
            path = next(t.attn2 for t in up_block_transformers(unet) if t.index == target.index)
            attn = unet.get_submodule(path)
            _check_plain_cross_attention(attn, path)
            self.processors[target.index] = QueryBiasAttnProcessor()
            attn.set_processor(self.processors[target.index])
        self.set_trainable()

    def _hybrid_targets(self) -> list[HybridTarget]:
        """The targeted up-block transformers (all unless cfg.hybrid_blocks), each with the Swin stage of its level."""
        transformers = up_block_transformers(self.unet)
        wanted = self.cfg.hybrid_blocks
        if wanted is not None:
            unknown = sorted(set(wanted) - {t.index for t in transformers})
            if unknown:
                raise ValueError(f"hybrid_blocks {unknown}: this UNet's up-block transformers are "
                                 f"{sorted(t.index for t in transformers)} (CFLD numbering)")
            transformers = [t for t in transformers if t.index in wanted]
        stages = len(self.appearance.channels)
        targets = []
        for t in transformers:
            stage = min(t.level, stages - 1)
            targets.append(HybridTarget(t.index, t.level, t.channels, stage, self.appearance.channels[stage]))
        return targets

    def set_trainable(self) -> None:
        """CFLD's parts all train; of the UNet, only parameters whose names match cfg.unet_trainable."""
        self.requires_grad_(True)
        for name, param in self.unet.named_parameters():
            param.requires_grad_(any(fnmatch(name, pattern) for pattern in self.cfg.unet_trainable))

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()
        self.appearance.enable_gradient_checkpointing()

    def condition(self, appearance_image: torch.Tensor, pose_map: torch.Tensor, latent_hw: tuple[int, int]) -> Conditioning:
        """Source images (B, 3, h, w) in [-1, 1] and pose maps (k*B, 21, H, W) -> the UNet's conditioning for k*B.

        With k > 1 the source's conditioning is repeated k times (training pairs each source with its own pose and the
        target's, as CFLD does), so the Swin, decoder and hybrid attention run once per source.
        """
        repeats, remainder = divmod(len(pose_map), len(appearance_image))
        if remainder or not repeats:
            raise ValueError(f"{len(pose_map)} pose maps for {len(appearance_image)} sources: expected a multiple")
        features = self.appearance(appearance_image)
        context = self.decoder(features[-1])  # coarse: what is worn, as the UNet's prompt
        query_bias = self.hybrid_attention(features, latent_hw)  # fine: texture detail on the up blocks' queries
        return Conditioning(
            context=context.repeat(repeats, 1, 1),
            pose_features=self.pose_adapter(pose_map),  # where: residuals of the down blocks
            query_bias={index: bias.repeat(repeats, 1, 1) for index, bias in query_bias.items()},
        )

    def null_context(self, batch: int) -> torch.Tensor:
        """The learnable null prompt, (batch, Q, D): the context of the unconditional branch."""
        return self.null_prompt.expand(batch, -1, -1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pose_features: list[torch.Tensor] | None = None, query_bias: dict[int, torch.Tensor] | None = None):
        """One UNet evaluation with the given context, pose residuals and query biases (UNet2DConditionOutput)."""
        for index, processor in self.processors.items():
            processor.bias = None if query_bias is None else query_bias.get(index)
        residuals = None if pose_features is None else list(pose_features)  # the UNet pops from this list
        return self.unet(sample, timestep, encoder_hidden_states, down_intrablock_additional_residuals=residuals)


def tiny_cfld_config() -> CFLDConfig:
    """A tiny CFLD for the tiny base model (tests, the demo, CPU benchmarks): 2-stage Swin 16 wide, 8 queries x 2 blocks."""
    return CFLDConfig(
        appearance=AppearanceConfig(embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=4, drop_path_rate=0.0),
        num_queries=8, decoder_depth=2, decoder_heads=4, hybrid_depth=1, hybrid_head_dim=8,
    )  # fmt: skip
