"""MCLD's network around two diffusers UNets: pose guider, face projector, reference path, multi-focal cross-attention.

Multi-focal conditioned latent diffusion (MCLD, CVPR 2025) conditions an SD 1.5 denoising UNet through three doors:
- `conv_in`: the pose guider's features of the target's DensePose IUV image are added to its output (a forward hook
  on `unet.conv_in`, so the UNet keeps its diffusers parameter names);
- attn1 of every transformer block: keys/values also read the reference UNet's tokens of the same block
  (atelier.diffusion.reference), computed once per image from the texture latent by `encode_reference`;
- attn2 of every transformer block: the stage's CLIP image tokens plus the face tokens through `to_k_ip`/`to_v_ip`
  (attention.py), the face tokens coming from the face projector (projector.py);
- nothing else: no text prompt, the UNet's own encoder_hidden_states are not read.

The unconditional branch (`uncond=True`) is what MCLD's released inference does for classifier-free guidance: the
source and texture CLIP tokens and the face embedding are zeros (the face projector still runs, on zeros) and there
are no reference features. The pose guider keeps the target's IUV image by default (`uncond_keeps_pose`): the pose
says where, not what, and MCLD's training drops only the CLIP images for its unconditional case; whether the released
inference zeroes the pose too is not verified (set uncond_keeps_pose false for that reading).
Sampling uses one call per branch (not a doubled batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from atelier.diffusion.attention import check_plain_attention
from atelier.diffusion.reference import (
    ReferenceSelfAttnProcessor,
    capture_reference_tokens,
    check_reference_block,
    transformer_blocks,
)
from atelier.methods.mcld.attention import MultiFocalCrossAttnProcessor
from atelier.methods.mcld.pose_guider import IUV_CHANNELS, PoseGuider, PoseGuiderConfig
from atelier.methods.mcld.projector import FaceProjector, FaceProjectorConfig


@dataclass
class MCLDNetConfig:
    """MCLD's parts (defaults: the paper on SD 1.5; context and first UNet widths come from the UNet)."""

    pose_guider: PoseGuiderConfig = field(default_factory=PoseGuiderConfig)
    projector: FaceProjectorConfig = field(default_factory=FaceProjectorConfig)
    face_scale: float = 0.5  # weight of the face tokens' attention in every attn2
    uncond_keeps_pose: bool = True  # the unconditional branch still adds the pose guider's features


def _width(block: nn.Module) -> int:
    return block.norm1.normalized_shape[0]


class MCLDNet(nn.Module):
    """The MCLD network: `encode_reference` once per image, then `forward` per denoising step and branch."""

    def __init__(self, cfg: MCLDNetConfig, unet: nn.Module, reference_unet: nn.Module, latent_scale: int = 8) -> None:
        super().__init__()
        self.cfg = cfg
        self.latent_scale = latent_scale
        self.unet = unet
        self.reference_unet = reference_unet
        self.pose_guider = PoseGuider(cfg.pose_guider, unet.conv_in.out_channels, latent_scale)
        self.face_projector = FaceProjector(cfg.projector, unet.config.cross_attention_dim)
        blocks, reference_blocks = transformer_blocks(unet), transformer_blocks(reference_unet)
        if len(blocks) != len(reference_blocks):
            raise ValueError(f"the denoising UNet has {len(blocks)} transformer blocks and the reference UNet "
                             f"{len(reference_blocks)}: MCLD pairs them one to one, so both must have the same layout")
        self.self_attention: list[ReferenceSelfAttnProcessor] = []
        self.cross_attention: list[MultiFocalCrossAttnProcessor] = []  # registered inside the UNet (attn2.processor)
        for block, reference in zip(blocks, reference_blocks):
            if _width(block.block) != _width(reference.block):
                raise ValueError(f"{block.path} is {_width(block.block)} wide but the reference UNet's block at the same "
                                 f"place ({reference.path}) is {_width(reference.block)}: the UNets' layouts differ")
            check_reference_block(reference)
            attn1, attn2 = block.block.attn1, block.block.attn2
            check_plain_attention(attn1, f"{block.path}.attn1")
            self.self_attention.append(ReferenceSelfAttnProcessor(block.path))
            attn1.set_processor(self.self_attention[-1])
            if attn2 is None:
                raise ValueError(f"{block.path} has no cross-attention (attn2); MCLD's contexts enter through it")
            check_plain_attention(attn2, f"{block.path}.attn2")
            weight = attn2.to_k.weight
            processor = MultiFocalCrossAttnProcessor(attn2, block.stage, cfg.face_scale).to(weight.device, weight.dtype)
            self.cross_attention.append(processor)
            attn2.set_processor(processor)
        self._pose_features: torch.Tensor | None = None
        unet.conv_in.register_forward_hook(self._add_pose_features)
        self.set_trainable()

    def _add_pose_features(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        """conv_in's forward hook: its output plus the pose guider's features of this call (if any)."""
        if self._pose_features is None:
            return output
        return output + self._pose_features.to(output.dtype)

    def set_face_scale(self, scale: float) -> None:
        """Weight of the face tokens' attention in every attn2 (0: the face is ignored)."""
        for processor in self.cross_attention:
            processor.scale = float(scale)

    def trainable(self) -> dict[str, nn.Parameter]:
        """What MCLD trains, by name: the whole denoising UNet (face projections included), the reference UNet but its
        last up block (SD 1.5: `up_blocks.3`, frozen in MCLD's training), pose guider and face projector. Their
        values() are what an optimiser takes. The reference UNet's layers past its last captured `norm1` (conv_out
        among them) stay in the list, as in the paper, though no gradient reaches them."""
        frozen = f"reference_unet.up_blocks.{len(self.reference_unet.up_blocks) - 1}."
        return {name: param for name, param in self.named_parameters() if not name.startswith(frozen)}

    def set_trainable(self) -> None:
        """requires_grad on exactly the parameters of `trainable()`."""
        trained = self.trainable()
        for name, param in self.named_parameters():
            param.requires_grad_(name in trained)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()
        self.reference_unet.enable_gradient_checkpointing()

    def encode_reference(self, texture_latent: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor]:
        """The reference tokens of a texture latent (B, 4, h, w), one (B, M, C) per transformer block: run ONCE per image.

        `context` (B, N, D) is the reference UNet's own cross-attention context; we pass the texture's CLIP token (by
        our reading of MCLD; its attn2 have no face branch, as the released reference_unet.pth has none).
        """
        return capture_reference_tokens(self.reference_unet, texture_latent, context)

    def _check_inputs(self, noisy: torch.Tensor, pose_iuv: torch.Tensor, clips: dict[str, torch.Tensor],
                      reference_tokens: list[torch.Tensor] | None) -> None:
        batch, (height, width) = len(noisy), noisy.shape[-2:]
        expected = (batch, IUV_CHANNELS, height * self.latent_scale, width * self.latent_scale)
        if tuple(pose_iuv.shape) != expected:
            raise ValueError(f"pose_iuv of shape {tuple(pose_iuv.shape)}: expected {expected}, the IUV image at the "
                             f"pixel size of the {height}x{width} latent (scale {self.latent_scale})")
        dim = self.unet.config.cross_attention_dim
        for name, tokens in clips.items():
            if tokens.ndim != 3 or len(tokens) != batch or tokens.shape[-1] != dim:
                raise ValueError(f"{name} of shape {tuple(tokens.shape)}: expected ({batch}, tokens, {dim}), CLIP image "
                                 "embeddings as (B, 1, D) tokens")
        if reference_tokens is None:
            return
        if len(reference_tokens) != len(self.self_attention):
            raise ValueError(f"{len(reference_tokens)} reference tokens for {len(self.self_attention)} transformer blocks; "
                             "pass what encode_reference returned")
        for processor, tokens in zip(self.self_attention, reference_tokens):
            if len(tokens) != batch:
                raise ValueError(f"reference tokens of {processor.path}: batch {len(tokens)}, the noisy latents' is {batch}")

    def forward(self, noisy: torch.Tensor, timestep: torch.Tensor, pose_iuv: torch.Tensor, source_clip: torch.Tensor,
                texture_clip: torch.Tensor, face_embedding: torch.Tensor, reference_tokens: list[torch.Tensor] | None,
                uncond: bool = False):
        """One denoising UNet evaluation (UNet2DConditionOutput).

        noisy (B, 4, h, w); pose_iuv (B, 3, h * scale, w * scale) in [0, 1]; source_clip / texture_clip (B, 1, D);
        face_embedding (B, 512) raw ArcFace (zeros: no face); reference_tokens from `encode_reference` (None: plain
        self-attention). `uncond`: the guidance's unconditional branch (zeros for the conditions, no reference).
        """
        if uncond:
            source_clip, texture_clip = torch.zeros_like(source_clip), torch.zeros_like(texture_clip)
            face_embedding, reference_tokens = torch.zeros_like(face_embedding), None
            if not self.cfg.uncond_keeps_pose:
                pose_iuv = torch.zeros_like(pose_iuv)
        self._check_inputs(noisy, pose_iuv, {"source_clip": source_clip, "texture_clip": texture_clip}, reference_tokens)
        face_tokens = self.face_projector(face_embedding)
        contexts = {"down": source_clip, "mid": torch.cat([source_clip, texture_clip], dim=1), "up": texture_clip}
        for processor in self.cross_attention:
            processor.context, processor.face = contexts[processor.stage], face_tokens
        for index, processor in enumerate(self.self_attention):
            processor.reference = None if reference_tokens is None else reference_tokens[index]
        self._pose_features = self.pose_guider(pose_iuv)  # added to conv_in's output by the hook
        # the attn2 processors read their stage's context set above; diffusers still wants a tensor here
        return self.unet(noisy, timestep, encoder_hidden_states=texture_clip)


def tiny_mcld_config() -> MCLDNetConfig:
    """A tiny MCLD for the tiny base model (VAE factor 4): a 3-width pose guider and a 1-layer, 32-wide projector."""
    return MCLDNetConfig(
        pose_guider=PoseGuiderConfig(channels=[8, 16, 32]),
        projector=FaceProjectorConfig(embedding_dim=16, dim=32, depth=1, heads=2, head_dim=16, num_queries=4, ff_mult=2),
    )
