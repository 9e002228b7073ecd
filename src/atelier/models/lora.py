"""LoRA (Hu et al. 2021) on SD 1.x components through PEFT and diffusers' own LoRA format.

Choices:
- Injection is diffusers'/transformers' `add_adapter` with a `peft.LoraConfig` (what diffusers' LoRA training example
  does), so every layer is a PEFT `LoraLayer` and diffusers' loaders, fusing and scaling all apply.
- Saving calls diffusers' `save_lora_weights` (of `StableDiffusionLoraLoaderMixin`, the pipeline's LoRA mixin):
  keys `unet.<module>.lora_A.weight` / `lora_B` and `text_encoder.*`, file `pytorch_lora_weights.safetensors`, the
  LoRA config stored as safetensors metadata so an alpha that differs from the rank (the style recipe: r 8, alpha 16)
  survives the round trip; the file is written atomically.
- Loading uses diffusers' own `lora_state_dict` / `load_lora_into_unet` / `load_lora_into_text_encoder`, the same
  calls `pipe.load_lora_weights` makes, so atelier and diffusers read a file identically. A PEFT adapter folder
  (`adapter_config.json` + `adapter_model.safetensors`, at the root or in `unet/` and `text_encoder/`) is converted
  to the same call: its keys lose PEFT's `base_model.model.` prefix and its config becomes the metadata.
- Scale and fuse go through PEFT's layer API (`set_scale`, `merge`), one path for the UNet and the text encoder; fusing
  also removes the PEFT wrappers (the scale is then fixed). Both drop cached text embeddings (models.encode).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from atelier.errors import UserError

logger = logging.getLogger(__name__)

WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
PEFT_CONFIG_NAME = "adapter_config.json"
PEFT_WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass
class LoraSettings:
    """Rank, alpha, dropout and target modules of a LoRA (the style recipe: r 8, alpha 16, attention projections)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(UNET_TARGETS))
    text_encoder: bool = False  # also train a LoRA on the text encoder
    text_encoder_target_modules: list[str] = field(default_factory=lambda: list(TEXT_ENCODER_TARGETS))


def add_lora(model: torch.nn.Module, rank: int, alpha: float, dropout: float, target_modules: list[str],
             adapter_name: str = "default") -> list[torch.nn.Parameter]:
    """Inject a fresh LoRA (B = 0, so the model is unchanged) into a diffusers or transformers model; return its parameters."""
    from peft import LoraConfig

    if rank < 1:
        raise UserError(f"lora.rank {rank}: expected a positive integer, e.g. 8")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        init_lora_weights="gaussian")
    try:
        model.add_adapter(config, adapter_name=adapter_name)
    except ValueError as error:
        raise UserError(f"lora.target_modules {list(target_modules)}: {str(error).splitlines()[0]}") from None
    return [param for name, param in model.named_parameters() if ".lora_" in name and param.requires_grad]


def lora_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The LoRA parameters of a model, by their names in the model."""
    return {name: param for name, param in model.named_parameters() if ".lora_" in name}


def _lora_state(model: torch.nn.Module, adapter_name: str) -> dict[str, torch.Tensor]:
    """One model's LoRA tensors keyed `<module>.lora_A.weight` / `lora_B` (what diffusers' `save_lora_adapter` writes).

    Not converted to the older `lora.down` / `lora.up` names: diffusers converts only attention projections that way,
    and a file mixing both styles (e.g. a LoRA that also targets convolutions) is not read back correctly.
    """
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=adapter_name)


def _config_dict(config) -> dict:
    """A peft LoraConfig as JSON-ready LoraConfig kwargs (sets such as target_modules become sorted lists)."""
    return {key: sorted(value) if isinstance(value, set) else value for key, value in config.to_dict().items()}


def save_lora(folder: str | os.PathLike, unet: torch.nn.Module, text_encoder: torch.nn.Module | None = None,
              adapter_name: str = "default") -> Path:
    """Write FOLDER/pytorch_lora_weights.safetensors in the diffusers LoRA format (config as metadata), atomically."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    from atelier.utils.io import atomic_path

    with_text = text_encoder is not None and adapter_name in getattr(text_encoder, "peft_config", {})
    path = Path(folder) / WEIGHT_NAME
    with atomic_path(path) as tmp:
        StableDiffusionLoraLoaderMixin.save_lora_weights(
            tmp.parent,
            unet_lora_layers=_lora_state(unet, adapter_name),
            text_encoder_lora_layers=_lora_state(text_encoder, adapter_name) if with_text else None,
            weight_name=tmp.name,
            unet_lora_adapter_metadata=_config_dict(unet.peft_config[adapter_name]),
            text_encoder_lora_adapter_metadata=_config_dict(text_encoder.peft_config[adapter_name]) if with_text else None,
        )
    return path


def _peft_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict without PEFT's `base_model.model.` prefix, LoraConfig kwargs) of one PEFT adapter folder."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    weights = next((folder / name for name in PEFT_WEIGHT_NAMES if (folder / name).is_file()), None)
    if weights is None:
        raise UserError(f"PEFT adapter folder {folder} has {PEFT_CONFIG_NAME} but no {' or '.join(PEFT_WEIGHT_NAMES)}; "
                        "copy the weight file beside the config")
    if weights.suffix == ".safetensors":
        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    config = _config_dict(LoraConfig.from_pretrained(str(folder)))
    state = {key.removeprefix("base_model.model."): value for key, value in state.items()}
    return state, config


def _read_peft_format(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A PEFT adapter (root, or unet/ and text_encoder/ subfolders) as diffusers-style prefixed keys and metadata."""
    if (folder / PEFT_CONFIG_NAME).is_file():
        state, config = _peft_folder(folder)
        is_text = all(key.startswith(("text_model.", "encoder.layers.")) for key in state)
        found = [("text_encoder" if is_text else "unet", state, config)]
    else:
        found = [(prefix, *_peft_folder(folder / prefix)) for prefix in ("unet", "text_encoder")
                 if (folder / prefix / PEFT_CONFIG_NAME).is_file()]
    state_dict = {f"{prefix}.{key}": value for prefix, state, _ in found for key, value in state.items()}
    metadata = {f"{prefix}.{key}": value for prefix, _, config in found for key, value in config.items()}
    return state_dict, metadata


def read_lora(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None, dict | None]:
    """(state dict, network alphas, metadata) of a diffusers-format LoRA file/folder or a PEFT adapter folder."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    path = Path(path).expanduser()
    if path.is_dir() and ((path / PEFT_CONFIG_NAME).is_file() or (path / "unet" / PEFT_CONFIG_NAME).is_file()):
        state, metadata = _read_peft_format(path)
        return state, None, metadata
    if path.is_dir():
        files = [path / WEIGHT_NAME] if (path / WEIGHT_NAME).is_file() else sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise UserError(f"--lora {path}: expected {WEIGHT_NAME} (diffusers format) or {PEFT_CONFIG_NAME} + "
                            f"adapter_model.safetensors (PEFT format); found {len(files)} .safetensors files")
        path = files[0]
    if not path.is_file():
        raise UserError(f"--lora {path} not found; pass a folder with {WEIGHT_NAME} or a PEFT adapter folder")
    if path.suffix != ".safetensors":
        raise UserError(f"--lora {path}: only .safetensors LoRA files are read (pickles can run code); convert it first")
    try:
        state, alphas, metadata = StableDiffusionLoraLoaderMixin.lora_state_dict(str(path), return_lora_metadata=True)
    except (OSError, ValueError) as error:
        raise UserError(f"--lora {path} is not a readable LoRA file ({str(error).splitlines()[0]})") from None
    return state, alphas, metadata


def load_lora(unet: torch.nn.Module, text_encoder: torch.nn.Module | None, path: str | os.PathLike,
              adapter_name: str = "style", scale: float = 1.0) -> None:
    """Load a diffusers-format or PEFT-format LoRA into the UNet (and text encoder) with diffusers' own loaders."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    state, alphas, metadata = read_lora(path)
    if not state or not all("lora" in key for key in state):
        raise UserError(f"--lora {path}: not a LoRA (every key must contain 'lora'); expected diffusers or PEFT format")
    if not any(key.startswith("unet.") for key in state):
        state = {key if key.startswith("text_encoder.") else f"unet.{key}": value for key, value in state.items()}
    loader = StableDiffusionLoraLoaderMixin
    try:
        loader.load_lora_into_unet(state, alphas, unet, adapter_name=adapter_name, metadata=metadata)
        if text_encoder is not None and any(key.startswith("text_encoder.") for key in state):
            loader.load_lora_into_text_encoder(state, alphas, text_encoder, adapter_name=adapter_name, metadata=metadata)
    except (ValueError, RuntimeError, TypeError) as error:
        raise UserError(f"--lora {path} does not fit this base model ({str(error).splitlines()[0][:200]}); "
                        "use a LoRA trained for the same base (SD 1.x)") from None
    set_lora_scale([unet, text_encoder], scale, adapter_name)  # also drops cached embeddings of the old weights
    logger.info("loaded LoRA %s (%d tensors, scale %.2f)", path, len(state), scale)


def _lora_layers(models: list[torch.nn.Module | None]):
    from peft.tuners.lora import LoraLayer

    return [module for model in models if model is not None for module in model.modules() if isinstance(module, LoraLayer)]


def set_lora_scale(models: list[torch.nn.Module | None], scale: float, adapter_name: str = "style") -> None:
    """Scale a LoRA's contribution (0 = off, 1 = as trained) in every layer of the given models."""
    from atelier.models.encode import clear_text_cache

    for layer in _lora_layers(models):
        layer.set_scale(adapter_name, scale)
    for model in models:
        if model is not None:
            clear_text_cache(model)  # a text encoder's embeddings change with the scale


@contextmanager
def lora_disabled(models: list[torch.nn.Module | None]):
    """Run the base models: every LoRA layer of `models` is bypassed inside the block and restored after it.
    A fused LoRA is part of the weights and cannot be bypassed: that raises ValueError (load with fuse_lora off)."""
    from atelier.models.encode import clear_text_cache

    if any(getattr(model, "_atelier_fused_lora", False) for model in filter(None, models)):
        raise ValueError("the LoRA is fused into the weights, so the base model cannot be run without it; "
                         "load the model with SpeedConfig(fuse_lora=False)")
    layers = _lora_layers(models)
    changed = [model for model in filter(None, models) if _lora_layers([model])]  # their text embeddings change
    states = [layer.disable_adapters for layer in layers]
    for layer in layers:
        layer.enable_adapters(False)
    for model in changed:
        clear_text_cache(model)
    try:
        yield
    finally:
        for layer, disabled in zip(layers, states):
            layer.enable_adapters(not disabled)
        for model in changed:
            clear_text_cache(model)


def fuse_lora(models: list[torch.nn.Module | None]) -> int:
    """Merge every LoRA layer's active adapters (at their current scales) into the base weights and put the plain base
    layer back in its place (diffusers' fuse_lora + unload_lora): inference runs at the base model's speed and the
    attention projections are plain Linear layers again (QKV fusion applies); the scale is fixed from then on.
    Returns the number of LoRA layers removed."""
    from peft.tuners.lora import LoraLayer

    from atelier.models.encode import clear_text_cache

    fused = 0
    for model in filter(None, models):
        layers = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
        for name, layer in layers:
            pending = [adapter for adapter in layer.active_adapters if adapter not in layer.merged_adapters]
            if pending:
                layer.merge(adapter_names=pending)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer.get_base_layer())
        if layers:
            if hasattr(model, "peft_config"):
                del model.peft_config  # no adapter is left to configure (as diffusers' unload_lora does)
            model._hf_peft_config_loaded = False
            model._atelier_fused_lora = True  # lora_disabled refuses: the base weights are gone
            clear_text_cache(model)
        fused += len(layers)
    return fused
