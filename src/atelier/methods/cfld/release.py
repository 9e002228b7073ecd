"""Checkpoint layouts for CFLD: the official Swin weights, CFLD's released checkpoint, and atelier's own folder.

Official Swin (microsoft/Swin-Transformer, e.g. `swin_base_patch4_window12_384_22kto1k.pth`, a dict whose "model"
entry is the state dict) -> transformers' SwinModel names used by `AppearanceBackbone`:
    patch_embed.proj.*                     -> embeddings.patch_embeddings.projection.*
    patch_embed.norm.*                     -> embeddings.norm.*
    layers.i.blocks.j.norm1/norm2.*        -> encoder.layers.i.blocks.j.layernorm_before/layernorm_after.*
    layers.i.blocks.j.attn.qkv.{weight,bias} (fused q;k;v rows) -> ...attention.{q,k,v}_proj.*
    layers.i.blocks.j.attn.proj.*          -> ...attention.o_proj.*
    layers.i.blocks.j.attn.relative_position_bias_table -> ...attention.relative_position_bias.relative_position_bias_table
    layers.i.blocks.j.mlp.fc1/fc2.*        -> ...mlp.fc1/fc2.*
    layers.i.downsample.{reduction,norm}.* -> encoder.layers.i.downsample.{reduction,norm}.*
    dropped: relative_position_index and attn_mask (buffers rebuilt from the window size), norm.* and head.* (CFLD
    uses neither the final LayerNorm nor the classifier), masked_embed.
A relative-position table of another window size is resized bicubically (window 12 -> 16 for CFLD's stages 1-3, and
-> 8 for its last stage, where the 8x8 grid clamps the window), as the official `load_pretrained` does.

CFLD's release (an `accelerate` save_state folder): `pytorch_model.bin` holds `backbone.*` (official Swin layout),
`appearance_encoder.*` (our `hybrid_attention.*`), `pose_encoder.*` (`pose_adapter.*`), `decoder.*` and
`learnable_vector` (`null_prompt`); `pytorch_model_1.bin` holds the whole UNet as `model.<diffusers name>` (`unet.*`).
Newer accelerate versions write `model.safetensors` / `model_1.safetensors` instead; both are read.

atelier's folder (what training writes to RUN/final): `cfld.safetensors` (every non-UNet parameter), `unet/`, `vae/`,
`scheduler/` (diffusers folders), `cfld.yaml` (the model config) and the run's `config.yaml`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from atelier.errors import UserError
from atelier.weights import rename_key

logger = logging.getLogger(__name__)

CFLD_WEIGHTS = "cfld.safetensors"
RELEASE_FILES = (("pytorch_model.bin", "pytorch_model_1.bin"), ("model.safetensors", "model_1.safetensors"))
_DROPPED = re.compile(r"(relative_position_index|attn_mask)$|^(norm|head)\.|^masked_embed$")
_RENAMES = (
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^patch_embed\.norm\.", "embeddings.norm."),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.blocks.\2.layernorm_before."),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.blocks.\2.layernorm_after."),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.blocks.\2.attention.o_proj."),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$",
     r"encoder.layers.\1.blocks.\2.attention.relative_position_bias.relative_position_bias_table"),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.blocks.\2.mlp."),
    (r"^layers\.(\d+)\.downsample\.", r"encoder.layers.\1.downsample."),
)  # fmt: skip


def swin_official_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official Swin state dict to transformers' SwinModel names (fused qkv split into q, k, v)."""
    mapped = {}
    for name, tensor in state.items():
        if _DROPPED.search(name):
            continue
        qkv = re.match(r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", name)
        if qkv:
            stage, block, kind = qkv.groups()
            for part, chunk in zip(("q", "k", "v"), tensor.chunk(3, dim=0)):
                mapped[f"encoder.layers.{stage}.blocks.{block}.attention.{part}_proj.{kind}"] = chunk
            continue
        renamed = rename_key(name, _RENAMES)
        if renamed is None:
            raise UserError(f"Swin weights: unexpected key {name!r}; expected the official Swin layout "
                            "(patch_embed.*, layers.N.blocks.M.*, layers.N.downsample.*)")
        mapped[renamed] = tensor
    return mapped


def fit_position_tables(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Resize relative-position tables whose window differs from the model's (bicubic on the (2w-1)^2 grid)."""
    fitted = dict(state)
    for name, table in state.items():
        if not name.endswith("relative_position_bias_table") or name not in reference:
            continue
        (old, heads), (new, _) = table.shape, reference[name].shape
        if old != new:
            side_old, side_new = round(old**0.5), round(new**0.5)
            grid = table.T.reshape(1, heads, side_old, side_old).float()
            resized = F.interpolate(grid, size=(side_new, side_new), mode="bicubic", align_corners=False)
            fitted[name] = resized.reshape(heads, new).T.to(table.dtype)
    return fitted


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    from atelier.weights import load_module_strict

    load_module_strict(module, state, source, "this CFLD configuration")


def load_swin_weights(backbone: torch.nn.Module, path: str | Path) -> None:
    """Initialise an AppearanceBackbone from an official Swin file (.pth with a "model" entry, or a bare state dict)."""
    from atelier.weights import load_state_dict

    state = load_state_dict(path)
    state = state.get("model", state)
    mapped = fit_position_tables(swin_official_to_transformers(state), backbone.state_dict())
    _load_strict(backbone, mapped, f"Swin weights {path}")
    logger.info("appearance backbone initialised from %s", path)


def cfld_release_to_atelier(model_state: dict[str, torch.Tensor], unet_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename CFLD's released state dicts (build_model's and the UNet wrapper's) to the names of our CFLD module."""
    prefixes = {"appearance_encoder.": "hybrid_attention.", "pose_encoder.": "pose_adapter.", "decoder.": "decoder."}
    swin = {name[len("backbone."):]: t for name, t in model_state.items() if name.startswith("backbone.")}
    mapped = {f"appearance.{name}": t for name, t in swin_official_to_transformers(swin).items()}
    for name, tensor in model_state.items():
        if name == "learnable_vector":
            mapped["null_prompt"] = tensor
        for old, new in prefixes.items():
            if name.startswith(old):
                mapped[new + name[len(old):]] = tensor
    known = ("backbone.", "learnable_vector", *prefixes)
    stray = [name for name in model_state if not name.startswith(known)]
    if stray:
        raise UserError(f"CFLD checkpoint: unexpected keys {stray[:3]}; expected CFLD's build_model state dict")
    mapped.update({f"unet.{name[len('model.'):]}": t for name, t in unet_state.items() if name.startswith("model.")})
    return mapped


def find_release_files(folder: str | Path) -> tuple[Path, Path] | None:
    """CFLD's two release files in folder (pytorch_model.bin + pytorch_model_1.bin, or the .safetensors pair)."""
    folder = Path(folder)
    for model_name, unet_name in RELEASE_FILES:
        if (folder / model_name).is_file() and (folder / unet_name).is_file():
            return folder / model_name, folder / unet_name
    return None


def load_cfld_release(model: torch.nn.Module, folder: str | Path) -> None:
    """Load CFLD's released checkpoint folder into our CFLD module (the UNet included)."""
    from atelier.weights import load_state_dict

    files = find_release_files(folder)
    if files is None:
        raise UserError(f"{folder}: no CFLD checkpoint; expected pytorch_model.bin and pytorch_model_1.bin "
                        "(or model.safetensors and model_1.safetensors) as CFLD's training saves them")
    mapped = cfld_release_to_atelier(load_state_dict(files[0]), load_state_dict(files[1]))
    _load_strict(model, fit_position_tables(mapped, model.state_dict()), f"CFLD checkpoint {folder}")


def cfld_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter of the CFLD module except the UNet's (saved as a diffusers folder beside it)."""
    return {name: t for name, t in model.state_dict().items() if not name.startswith("unet.")}


def save_cfld(model: torch.nn.Module, vae, scheduler, folder: str | Path) -> Path:
    """Write atelier's CFLD folder: cfld.safetensors, unet/, vae/, scheduler/ (cfld.yaml and config.yaml are the caller's)."""
    from atelier.utils.io import save_safetensors

    folder = Path(folder)
    save_safetensors(cfld_state_dict(model), folder / CFLD_WEIGHTS)
    model.unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    scheduler.save_pretrained(folder / "scheduler")
    return folder


def load_cfld_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load cfld.safetensors (every non-UNet parameter) into a CFLD module."""
    from atelier.weights import load_state_dict

    state = load_state_dict(path)
    _load_strict(model, {**state, **{k: v for k, v in model.state_dict().items() if k.startswith("unet.")}}, str(path))
