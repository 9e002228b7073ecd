"""Uni-DlLoRA's Dual-LoRA (Liao et al. 2024): a real-photo and an illustration LoRA over all UNet attention projections.

Both are PEFT adapters on the same UNet, named `real` and `illustration` (atelier.diffusion.lora's injection), so the
shared base weights stay frozen and each domain's update lives in its own low-rank pair. Training activates one
domain at a time; inference weights each (`{"real": 0, "illustration": 1}` is the paper's setting: only the
illustration set is used). A weight of 0 deactivates that adapter entirely, so all-zero weights run the base UNet.
Each domain is saved as its own diffusers-format LoRA file (atelier.diffusion.lora.save_lora):
`DIR/real/pytorch_lora_weights.safetensors` and `DIR/illustration/pytorch_lora_weights.safetensors`, so either
loads into any diffusers pipeline with `load_lora_weights`.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from atelier.diffusion.lora import WEIGHT_NAME, LoraSettings, add_lora, load_lora, save_lora
from atelier.errors import UserError

logger = logging.getLogger(__name__)

DOMAINS = ("real", "illustration")
PAPER_WEIGHTS = {"real": 0.0, "illustration": 1.0}  # inference uses only the illustration set


@contextmanager
def second_adapter_allowed():
    """Silence PEFT's warning that a model already has an adapter: two adapters on one UNet are the point here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        yield


def add_dual_lora(unet: torch.nn.Module, settings: LoraSettings, seed: int = 0, init_from: dict[str, str] | None = None) -> None:
    """Inject `real` and `illustration` LoRAs into the UNet's attention: fresh (B = 0, the UNet is unchanged) or, for
    the domains in `init_from`, loaded from an existing diffusers/PEFT-format LoRA (e.g. a style LoRA)."""
    init_from = init_from or {}
    unknown = sorted(set(init_from) - set(DOMAINS))
    if unknown:
        raise UserError(f"LoRA init: unknown domain {unknown[0]!r}; expected {' or '.join(DOMAINS)}")
    for offset, domain in enumerate(DOMAINS):
        with second_adapter_allowed():
            if domain in init_from:
                load_lora(unet, None, init_from[domain], adapter_name=domain)
                continue
            torch.manual_seed(seed + offset)  # each domain's initial A matrices are a function of the seed
            add_lora(unet, settings.rank, settings.alpha, settings.dropout, settings.target_modules, adapter_name=domain)


def domain_parameters(unet: torch.nn.Module, domain: str) -> dict[str, torch.nn.Parameter]:
    """The LoRA parameters of one domain, by their names in the UNet."""
    return {name: param for name, param in unet.named_parameters() if f".lora_A.{domain}." in name or f".lora_B.{domain}." in name}


def parse_weights(text: str, flag: str = "--lora-weights", names: tuple[str, ...] = DOMAINS) -> dict[str, float]:
    """'real=0,illustration=1' -> {'real': 0.0, 'illustration': 1.0}; names left out get 0."""
    weights = dict.fromkeys(names, 0.0)
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        name, separator, value = part.partition("=")
        if not separator or name.strip() not in names:
            raise UserError(f"{flag} {text!r}: expected NAME=WEIGHT pairs with NAME in {', '.join(names)}, "
                            f"e.g. {','.join(f'{n}={i}' for i, n in enumerate(names))}")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"{flag} {text!r}: weight {value!r} of {name.strip()} is not a number") from None
    return weights


def set_domain_weights(unet: torch.nn.Module, weights: dict[str, float], trainable: bool = False) -> None:
    """Activate the domains with a non-zero weight, each scaled by its weight (0 everywhere = the base UNet);
    `trainable` gives the active domains gradients (training), otherwise every LoRA stays frozen."""
    from peft.tuners.lora import LoraLayer

    unknown = sorted(set(weights) - set(DOMAINS))
    if unknown:
        raise UserError(f"LoRA weights: unknown domain {unknown[0]!r}; expected {' and '.join(DOMAINS)}")
    active = [domain for domain in DOMAINS if weights.get(domain, 0.0) != 0.0]
    layers = [module for module in unet.modules() if isinstance(module, LoraLayer)]
    loaded = set().union(*(layer.lora_A.keys() for layer in layers)) if layers else set()
    missing = [domain for domain in active if domain not in loaded]
    if missing:
        raise UserError(f"LoRA weights: the {missing[0]} LoRA is not loaded (loaded: {sorted(loaded) or 'none'}); "
                        f"set its weight to 0 or add {missing[0]}/{WEIGHT_NAME} to the checkpoint")
    for layer in layers:
        layer.set_adapter(active, inference_mode=not trainable)  # PEFT: inactive adapters are skipped in forward
        for domain in active:
            layer.set_scale(domain, weights[domain])


def save_dual_lora(folder: str | os.PathLike, unet: torch.nn.Module) -> Path:
    """Write FOLDER/<domain>/pytorch_lora_weights.safetensors (diffusers format) for both domains."""
    folder = Path(folder)
    for domain in DOMAINS:
        save_lora(folder / domain, unet, adapter_name=domain)
    return folder


def load_dual_lora(unet: torch.nn.Module, folder: str | os.PathLike, weights: dict[str, float] | None = None) -> list[str]:
    """Load FOLDER/<domain>/ LoRAs that exist (illustration required) and apply `weights`; return the loaded domains."""
    folder = Path(folder).expanduser()
    if not (folder / "illustration" / WEIGHT_NAME).is_file():
        raise UserError(f"{folder}: no illustration/{WEIGHT_NAME}; expected the dual LoRA as real/ and illustration/ "
                        "diffusers-format LoRA folders (atelier train configs/dual-lora.yaml writes them)")
    loaded = [domain for domain in DOMAINS if (folder / domain / WEIGHT_NAME).is_file()]
    for domain in loaded:
        with second_adapter_allowed():
            load_lora(unet, None, folder / domain, adapter_name=domain)
    set_domain_weights(unet, weights if weights is not None else PAPER_WEIGHTS)
    return loaded
