"""LoRA (Hu et al. 2021) on SD 1.x components through PEFT and diffusers' own LoRA format.

Choices:
- Injection is PEFT's own `inject_adapter_in_model` with a `peft.LoraConfig`, for the UNet and the text encoder alike:
  every layer is a PEFT `LoraLayer`, so diffusers' loaders, fusing and scaling all apply, and no wrapper's version
  gate (transformers' `add_adapter` / `load_adapter` refuse PEFT releases they were not built against) decides
  whether a LoRA can be trained or loaded.
- Saving calls diffusers' `save_lora_weights` (of `StableDiffusionLoraLoaderMixin`, the pipeline's LoRA mixin):
  keys `unet.<module>.lora_A.weight` / `lora_B` and `text_encoder.*`, file `pytorch_lora_weights.safetensors`, the
  LoRA config stored as safetensors metadata so an alpha that differs from the rank (the style recipe: r 8, alpha 16)
  survives the round trip; the file is written atomically.
- Loading reads the file with diffusers' own `lora_state_dict` and loads the UNet part with `load_lora_into_unet` (the
  calls `pipe.load_lora_weights` makes), so atelier and diffusers read a file identically; the text-encoder part goes
  through the same key conversions and then PEFT directly (`inject_adapter_in_model` + `set_peft_model_state_dict`). A PEFT adapter folder
  (`adapter_config.json` + `adapter_model.safetensors`, at the root or in `unet/` and `text_encoder/`) is converted
  to the same call: its keys lose PEFT's `base_model.model.` prefix and its config becomes the metadata.
- Scale and fuse go through PEFT's layer API (`set_scale`, `merge`), one path for the UNet and the text encoder; fusing
  also removes the PEFT wrappers (the scale is then fixed). Both drop cached text embeddings (diffusion.encode).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from atelier.errors import UserError, raise_if_version_clash

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


def inject_lora(model: torch.nn.Module, config, adapter_name: str) -> None:
    """Inject the LoRA layers of a `peft.LoraConfig` into any torch model with PEFT itself and make that adapter the
    active one (what diffusers' and transformers' `add_adapter` do, without their version gates)."""
    from diffusers import ModelMixin
    from peft import inject_adapter_in_model

    if adapter_name in getattr(model, "peft_config", {}):
        raise ValueError(f"the model already has a LoRA adapter named {adapter_name!r}")
    with warnings.catch_warnings():  # a second adapter beside the first is what dual LoRA wants
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        inject_adapter_in_model(config, model, adapter_name)
    if isinstance(model, ModelMixin):
        model._hf_peft_config_loaded = True  # diffusers' own adapter methods then see the adapter
    for layer in _lora_layers([model]):
        layer.set_adapter(adapter_name)


def add_lora(model: torch.nn.Module, rank: int, alpha: float, dropout: float, target_modules: list[str],
             adapter_name: str = "default") -> list[torch.nn.Parameter]:
    """Inject a fresh LoRA (B = 0, so the model is unchanged) into a diffusers or transformers model; return its parameters."""
    from peft import LoraConfig

    if rank < 1:
        raise UserError(f"lora.rank {rank}: expected a positive integer, e.g. 8")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        init_lora_weights="gaussian")
    try:
        inject_lora(model, config, adapter_name)
    except ValueError as error:
        if "not found in the base model" not in str(error):  # only a target naming no layer is the user's mistake
            raise_if_version_clash(error)
            raise
        names = sorted({name.rpartition(".")[2] for name, module in model.named_modules()
                        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))})
        raise UserError(f"lora.target_modules {list(target_modules)}: no layer of {type(model).__name__} has these "
                        f"names; its Linear/Conv2d layers end in {names[:12]}") from None
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

    from atelier.weights import load_state_dict

    weights = next((folder / name for name in PEFT_WEIGHT_NAMES if (folder / name).is_file()), None)
    if weights is None:
        raise UserError(f"PEFT adapter folder {folder} has {PEFT_CONFIG_NAME} but no {' or '.join(PEFT_WEIGHT_NAMES)}; "
                        "copy the weight file beside the config")
    state = load_state_dict(weights)  # safetensors, or a weights-only unpickling: a bad file is one UserError naming it
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


def _text_encoder_config(state: dict[str, torch.Tensor], alphas: dict | None, metadata: dict | None):
    """The LoraConfig of a text-encoder LoRA: its saved metadata, else ranks from lora_B and alphas from the file."""
    from peft import LoraConfig

    if metadata:
        return LoraConfig(**metadata)
    ranks = {key.split(".lora_B.")[0]: value.shape[1] for key, value in state.items() if ".lora_B." in key}
    rank = Counter(ranks.values()).most_common(1)[0][0]
    alpha_values = [float(value) for value in (alphas or {}).values()]
    alpha = Counter(alpha_values).most_common(1)[0][0] if alpha_values else rank  # no alpha stored: scale 1
    rank_pattern = {module: value for module, value in ranks.items() if value != rank}
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=sorted(ranks), rank_pattern=rank_pattern,
                      alpha_pattern={} if alpha_values else dict(rank_pattern))


def _load_text_encoder_lora(state: dict[str, torch.Tensor], alphas: dict | None, metadata: dict | None,
                            text_encoder: torch.nn.Module, adapter_name: str) -> None:
    """Load the `text_encoder.*` part of a diffusers-format LoRA with PEFT itself (the same key conversions as
    diffusers' `load_lora_into_text_encoder`, which would hand the weights to transformers' version-gated loader)."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft
    from peft import set_peft_model_state_dict

    prefix = "text_encoder."
    state = convert_state_dict_to_peft(convert_state_dict_to_diffusers(
        {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}))
    if not hasattr(text_encoder, "text_model"):  # newer transformers flatten CLIPTextModel
        state = {key.removeprefix("text_model."): value for key, value in state.items()}
    metadata = {key.removeprefix(prefix): value for key, value in (metadata or {}).items() if key.startswith(prefix)}
    alphas = {key: value for key, value in (alphas or {}).items() if key.startswith(prefix)}
    inject_lora(text_encoder, _text_encoder_config(state, alphas, metadata), adapter_name)
    result = set_peft_model_state_dict(text_encoder, state, adapter_name=adapter_name)
    unexpected = [key for key in result.unexpected_keys if ".lora_" in key]
    if unexpected:
        raise ValueError(f"{len(unexpected)} text-encoder LoRA tensors match no layer, e.g. {unexpected[0]}")


def load_lora(unet: torch.nn.Module, text_encoder: torch.nn.Module | None, path: str | os.PathLike,
              adapter_name: str = "style", scale: float = 1.0) -> None:
    """Load a diffusers-format or PEFT-format LoRA into the UNet (and text encoder): diffusers' reader and UNet loader,
    PEFT for the text encoder."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    state, alphas, metadata = read_lora(path)
    if not state or not all("lora" in key for key in state):
        raise UserError(f"--lora {path}: not a LoRA (every key must contain 'lora'); expected diffusers or PEFT format")
    if not any(key.startswith("unet.") for key in state):
        state = {key if key.startswith("text_encoder.") else f"unet.{key}": value for key, value in state.items()}
    try:
        StableDiffusionLoraLoaderMixin.load_lora_into_unet(state, alphas, unet, adapter_name=adapter_name,
                                                           metadata=metadata)
        if text_encoder is not None and any(key.startswith("text_encoder.") for key in state):
            _load_text_encoder_lora(state, alphas, metadata, text_encoder, adapter_name)
    except (ValueError, RuntimeError, TypeError) as error:
        raise_if_version_clash(error)
        raise UserError(f"--lora {path} does not fit this base model ({str(error).splitlines()[0][:200]}); "
                        "use a LoRA trained for the same base (SD 1.x)") from None
    set_lora_scale([unet, text_encoder], scale, adapter_name)  # also drops cached embeddings of the old weights
    logger.info("loaded LoRA %s (%d tensors, scale %.2f)", path, len(state), scale)


def _lora_layers(models: list[torch.nn.Module | None]):
    from peft.tuners.lora import LoraLayer

    return [module for model in models if model is not None for module in model.modules() if isinstance(module, LoraLayer)]


def set_lora_scale(models: list[torch.nn.Module | None], scale: float, adapter_name: str = "style") -> None:
    """Scale a LoRA's contribution (0 = off, 1 = as trained) in every layer of the given models."""
    from atelier.diffusion.encode import clear_text_cache

    for layer in _lora_layers(models):
        layer.set_scale(adapter_name, scale)
    for model in models:
        if model is not None:
            clear_text_cache(model)  # a text encoder's embeddings change with the scale


@contextmanager
def lora_disabled(models: list[torch.nn.Module | None]):
    """Run the base models: every LoRA layer of `models` is bypassed inside the block and restored after it.
    A fused LoRA is part of the weights and cannot be bypassed: that raises ValueError (load with fuse_lora off)."""
    from atelier.diffusion.encode import clear_text_cache

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

    from atelier.diffusion.encode import clear_text_cache

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
