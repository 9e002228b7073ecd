"""Export SD 1.x components to one `.safetensors` file in the original (CompVis/LDM) key layout.

That is the layout of `v1-5-pruned-emaonly.safetensors` and the one diffusers' single-file loader (and other SD tools)
read, so a model trained here can leave as a single file. The mapping is the inverse of the LDM -> diffusers renaming:
UNet under `model.diffusion_model.`, VAE under `first_stage_model.`, CLIP text model under
`cond_stage_model.transformer.`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from atelier.diffusion.components import SDComponents

RESNET_NAMES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET_NAMES = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(key: str, names: dict[str, str]) -> str:
    head, _, tail = key.partition(".")
    for old, new in names.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    return key if head not in names else names[head] + "." + tail


def unet_to_original(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel keys -> LDM `model.diffusion_model.*` keys."""
    per_level = layers_per_block + 1
    out: dict[str, torch.Tensor] = {}
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in ("time_embedding", "conv_in", "conv_norm_out", "conv_out"):
            new = _rename(key, fixed)
        elif parts[0] == "down_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "downsamplers":
                new = f"input_blocks.{(block + 1) * per_level}.0.op.{rest.removeprefix('conv.')}"
            else:
                slot = 0 if kind == "resnets" else 1
                rest = _rename(rest, RESNET_NAMES) if kind == "resnets" else rest
                new = f"input_blocks.{1 + block * per_level + index}.{slot}.{rest}"
        elif parts[0] == "mid_block":
            kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = f"middle_block.{2 * index if kind == 'resnets' else 1}.{_rename(rest, RESNET_NAMES) if kind == 'resnets' else rest}"
        elif parts[0] == "up_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "upsamplers":
                has_attention = any(k.startswith(f"up_blocks.{block}.attentions.") for k in state)
                new = f"output_blocks.{block * per_level + layers_per_block}.{2 if has_attention else 1}.{rest}"
            else:
                slot = 0 if kind == "resnets" else 1
                rest = _rename(rest, RESNET_NAMES) if kind == "resnets" else rest
                new = f"output_blocks.{block * per_level + index}.{slot}.{rest}"
        else:
            raise ValueError(f"UNet key {key} has no original-layout equivalent")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_original(state: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> LDM `first_stage_model.*` keys (attention linears become 1x1 convs)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        new = key
        if parts[1] in ("down_blocks", "up_blocks"):
            coder, block, kind, rest = parts[0], int(parts[2]), parts[3], ".".join(parts[4:])
            level = block if coder == "encoder" else num_blocks - 1 - block
            stage = "down" if coder == "encoder" else "up"
            if kind in ("downsamplers", "upsamplers"):
                new = f"{coder}.{stage}.{level}.{'downsample' if kind == 'downsamplers' else 'upsample'}.{rest.removeprefix('0.')}"
            else:
                index, rest = rest.split(".", 1)
                new = f"{coder}.{stage}.{level}.block.{index}.{_rename(rest, VAE_RESNET_NAMES)}"
        elif parts[1] == "mid_block":
            coder, kind, index, rest = parts[0], parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"{coder}.mid.block_{index + 1}.{_rename(rest, VAE_RESNET_NAMES)}"
            else:
                new = f"{coder}.mid.attn_1.{_rename(rest, VAE_ATTENTION_NAMES)}"
                if value.ndim == 2:
                    value = value[:, :, None, None]
        elif parts[1] == "conv_norm_out":
            new = f"{parts[0]}.norm_out.{'.'.join(parts[2:])}"
        out["first_stage_model." + new] = value
    return out


def save_single_file(components: SDComponents, path: str | Path) -> Path:
    """Write UNet, VAE and text encoder as one original-layout `.safetensors` checkpoint (atomically)."""
    from atelier.utils.io import save_safetensors

    state = unet_to_original(components.unet.state_dict(), components.unet.config.layers_per_block)
    state.update(vae_to_original(components.vae.state_dict(), len(components.vae.config.block_out_channels)))
    for key, value in components.text_encoder.state_dict().items():
        if not key.startswith("text_model."):
            key = "text_model." + key
        state["cond_stage_model.transformer." + key] = value
    save_safetensors(state, path)
    return Path(path)
