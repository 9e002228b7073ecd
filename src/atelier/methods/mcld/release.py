"""MCLD's released checkpoint files, mapped onto `MCLDNet` (and written back, for the round-trip and for export).

The release is a folder of plain `state_dict()`s, each read with `torch.load(weights_only=True)`:
    denoising_unet.pth    -> unet.*            diffusers UNet2DConditionModel names, unchanged; every attn2 adds
                                               `...attn2.processor.to_k_ip.weight` / `to_v_ip.weight`, which are
                                               our MultiFocalCrossAttnProcessor's names (it sits at attn2.processor)
    reference_unet.pth    -> reference_unet.*  diffusers names, unchanged
    pose_guider.pth       -> pose_guider.*     `conv_in.*`, `blocks.N.*`, `conv_out.*`, unchanged: the mapping is by
                                               these names, so the file must have our layout (PoseGuiderConfig:
                                               SD 1.5 with refine_convs has blocks.0..5, without blocks.0..2)
    image_proj_model.pth  -> face_projector.*  (the name MCLD's loader reads; else `image_projector.pth`, the name
                                               its README gives) IP-Adapter's resampler names, renamed:
        latents                                 -> queries
        proj_in.* / proj_out.* / norm_out.*     -> the same
        layers.i.0.norm1.*                      -> layers.i.attention.norm_inputs.*   (LayerNorm of the inputs)
        layers.i.0.norm2.*                      -> layers.i.attention.norm_queries.*  (LayerNorm of the queries)
        layers.i.0.to_q.weight                  -> layers.i.attention.to_q.weight
        layers.i.0.to_kv.weight (k rows; v rows) -> layers.i.attention.to_k.weight, ...to_v.weight
        layers.i.0.to_out.weight                -> layers.i.attention.to_out.weight
        layers.i.1.0.* (LayerNorm)              -> layers.i.feed_forward.norm.*
        layers.i.1.1.weight / layers.i.1.3.weight -> layers.i.feed_forward.fc1.weight / fc2.weight
A missing file, a key of no known layout, or keys that do not fit the network are one UserError naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from atelier.errors import UserError
from atelier.weights import rename_key

DENOISING, REFERENCE, POSE_GUIDER = "denoising_unet.pth", "reference_unet.pth", "pose_guider.pth"
PROJECTOR_NAMES = ("image_proj_model.pth", "image_projector.pth")  # the loader's name first, then the README's
_PROJECTOR_RENAMES = (
    (r"^latents$", "queries"),
    (r"^(proj_in|proj_out|norm_out)\.(weight|bias)$", r"\1.\2"),
    (r"^layers\.(\d+)\.0\.norm1\.(weight|bias)$", r"layers.\1.attention.norm_inputs.\2"),
    (r"^layers\.(\d+)\.0\.norm2\.(weight|bias)$", r"layers.\1.attention.norm_queries.\2"),
    (r"^layers\.(\d+)\.0\.(to_q|to_out)\.weight$", r"layers.\1.attention.\2.weight"),
    (r"^layers\.(\d+)\.1\.0\.(weight|bias)$", r"layers.\1.feed_forward.norm.\2"),
    (r"^layers\.(\d+)\.1\.1\.weight$", r"layers.\1.feed_forward.fc1.weight"),
    (r"^layers\.(\d+)\.1\.3\.weight$", r"layers.\1.feed_forward.fc2.weight"),
)  # fmt: skip
# the inverse of _PROJECTOR_RENAMES inside a layer
_RELEASE_LAYER_PARTS = {
    "attention.norm_inputs": "0.norm1", "attention.norm_queries": "0.norm2", "attention.to_q": "0.to_q",
    "attention.to_out": "0.to_out", "feed_forward.norm": "1.0", "feed_forward.fc1": "1.1", "feed_forward.fc2": "1.3",
}  # fmt: skip
_TO_KV = re.compile(r"^layers\.(\d+)\.0\.to_kv\.weight$")


def projector_release_to_atelier(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename a released resampler state dict (IP-Adapter's names) to FaceProjector's; fused to_kv split in k, v."""
    mapped, stray = {}, []
    for name, tensor in state.items():
        fused = _TO_KV.match(name)
        if fused:
            key, value = tensor.chunk(2, dim=0)
            mapped[f"layers.{fused.group(1)}.attention.to_k.weight"] = key
            mapped[f"layers.{fused.group(1)}.attention.to_v.weight"] = value
            continue
        renamed = rename_key(name, _PROJECTOR_RENAMES)
        if renamed is None:
            stray.append(name)
        else:
            mapped[renamed] = tensor
    if stray:
        raise UserError(f"{source}: {len(stray)} unexpected keys (first: {stray[:3]}); expected the Perceiver resampler "
                        "of IP-Adapter (latents, proj_in.*, layers.N.0.*, layers.N.1.*, proj_out.*, norm_out.*)")
    return mapped


def projector_atelier_to_release(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """FaceProjector's state dict under the released resampler's names (to_k and to_v fused into to_kv)."""
    released = {}
    for name, tensor in state.items():
        layer = re.match(r"^layers\.(\d+)\.(.+)\.(weight|bias)$", name)
        if layer is None:  # queries, proj_in, proj_out, norm_out
            released["latents" if name == "queries" else name] = tensor
            continue
        index, part, kind = layer.groups()
        if part == "attention.to_k":
            to_v = state[f"layers.{index}.attention.to_v.weight"]
            released[f"layers.{index}.0.to_kv.weight"] = torch.cat([tensor, to_v])
        elif part != "attention.to_v":
            released[f"layers.{index}.{_RELEASE_LAYER_PARTS[part]}.{kind}"] = tensor
    return released


def find_release_files(folder: str | Path) -> dict[str, Path]:
    """{denoising_unet, reference_unet, pose_guider, projector: path} in an MCLD release folder; UserError if any lacks."""
    folder = Path(folder)
    files = {name: folder / name for name in (DENOISING, REFERENCE, POSE_GUIDER)}
    projector = next((folder / name for name in PROJECTOR_NAMES if (folder / name).is_file()), None)
    missing = [name for name, path in files.items() if not path.is_file()] + ([] if projector else [" or ".join(PROJECTOR_NAMES)])
    if missing:
        raise UserError(f"{folder}: not MCLD's released checkpoint, missing {', '.join(missing)}; expected {DENOISING}, "
                        f"{REFERENCE}, {POSE_GUIDER} and {PROJECTOR_NAMES[0]} (or {PROJECTOR_NAMES[1]})")
    return {"unet": files[DENOISING], "reference_unet": files[REFERENCE], "pose_guider": files[POSE_GUIDER],
            "face_projector": projector}


def load_mcld_release(net: torch.nn.Module, folder: str | Path) -> None:
    """Load MCLD's released files into an MCLDNet built for SD 1.5 (each part strictly, named by its file)."""
    from atelier.weights import load_module_strict, load_state_dict

    for part, path in find_release_files(folder).items():
        state = load_state_dict(path)  # torch.load(weights_only=True) for .pth
        if part == "face_projector":
            state = projector_release_to_atelier(state, str(path))
        load_module_strict(getattr(net, part), state, str(path), f"MCLD's {part.replace('_', ' ')} (this configuration)")


def save_mcld_release(net: torch.nn.Module, folder: str | Path) -> Path:
    """Write an MCLDNet as MCLD's release files (denoising_unet.pth, reference_unet.pth, pose_guider.pth,
    image_proj_model.pth), e.g. to run it in the authors' code."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.unet.state_dict(), folder / DENOISING)
    torch.save(net.reference_unet.state_dict(), folder / REFERENCE)
    torch.save(net.pose_guider.state_dict(), folder / POSE_GUIDER)
    torch.save(projector_atelier_to_release(net.face_projector.state_dict()), folder / PROJECTOR_NAMES[0])
    return folder
