"""The released Uni-DlLoRA checkpoint (Liao et al. 2024), read from a local folder and converted to atelier's layout.

Released layout (its inference.py):
    adapter/, adapter_1/            the Uni-adapter, `MultiAdapter.from_pretrained(DIR/adapter)` (RGB, then sketch)
    custom_duallora/duallora.bin    {"unet_custom.illu_lora_parameter": [...], "unet_custom.real_lora_parameter": [...]}
    pidnet/table5_pidinet.pth       PiDiNet weights for the sketch branch (controlnet_aux's PidiNetDetector)
Each dual-LoRA entry is a sequence of diffusers' (now deprecated) `LoRALinearLayer` modules, `down` (rank x in) and
`up` (out x rank), output scaled by network_alpha / rank (1 when network_alpha is None). Entry i belongs to the
(i // 4)-th attention module in `unet.attn_processors` order (down, up, then mid blocks) and to its projection
to_q, to_k, to_v, to_out.0 for i % 4 = 0, 1, 2, 3: the order the released code walks when it calls
`set_lora_layer`. A flat state dict (`<key>.<i>.down.weight`) is read the same way.
The file is a pickle, so it is read with `torch.load(weights_only=True)`, which only rebuilds tensors, containers
and the module classes allowed here (a stand-in for LoRALinearLayer): no code from the file runs.
Conversion: down -> PEFT lora_A, up -> lora_B, alpha = network_alpha (or the rank), into the `real` and
`illustration` adapters of atelier.methods.unidllora.dual_lora, which saves each in the diffusers LoRA format.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from atelier.diffusion.lora import UNET_TARGETS, add_lora
from atelier.errors import UserError
from atelier.methods.unidllora.dual_lora import DOMAINS, save_dual_lora, second_adapter_allowed
from atelier.methods.unidllora.sketch import PIDINET_FOLDER
from atelier.methods.unidllora.uni_adapter import ADAPTER_FOLDER

logger = logging.getLogger(__name__)

RELEASED_LORA = Path("custom_duallora") / "duallora.bin"
RELEASED_KEYS = {"real": "unet_custom.real_lora_parameter", "illustration": "unet_custom.illu_lora_parameter"}
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")  # per attention module, in the released code's order

ReleasedLayer = tuple[torch.Tensor, torch.Tensor, float | None]  # (down, up, network_alpha)


class _ReleasedLoraLayer(torch.nn.Module):
    """Stand-in for diffusers' deprecated LoRALinearLayer while unpickling: holds `down`, `up`, `network_alpha`."""


def is_released_checkpoint(folder: str | os.PathLike) -> bool:
    """True when FOLDER holds the released custom_duallora/duallora.bin."""
    return (Path(folder).expanduser() / RELEASED_LORA).is_file()


def attention_projections(unet: torch.nn.Module) -> list[str]:
    """Module names of the UNet's attention projections in the released file's order (4 per attention module)."""
    attentions = [name.removesuffix(".processor") for name in unet.attn_processors]
    return [f"{attention}.{projection}" for attention in attentions for projection in PROJECTIONS]


def _unpickle(file: Path):
    allowed = [(_ReleasedLoraLayer, "diffusers.models.lora.LoRALinearLayer"), torch.nn.ModuleList, torch.nn.Linear]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and weights-only refusals share no base class
        raise UserError(f"{file} could not be read as the released dual LoRA ({str(error).splitlines()[0][:200]}); "
                        "expected Uni-DlLoRA's custom_duallora/duallora.bin") from None


def _layers(content: dict, key: str, file: Path) -> list[ReleasedLayer]:
    """One domain's (down, up, alpha) list from a sequence of LoRALinearLayer modules or from flat tensors."""
    value = content.get(key)
    if value is not None:
        try:
            return [(layer.down.weight.detach(), layer.up.weight.detach(), getattr(layer, "network_alpha", None)) for layer in value]
        except (AttributeError, TypeError):
            raise UserError(f"{file}: {key} is a {type(value).__name__}, expected a list of LoRA layers with down/up") from None
    count = sum(1 for name in content if name.startswith(f"{key}.") and name.endswith(".down.weight"))
    if not count:
        raise UserError(f"{file}: no {key!r} entry; expected the keys {', '.join(RELEASED_KEYS.values())}")
    try:
        return [(content[f"{key}.{i}.down.weight"], content[f"{key}.{i}.up.weight"], None) for i in range(count)]
    except KeyError as error:
        raise UserError(f"{file}: missing {error.args[0]} (flat dual-LoRA state dict)") from None


def read_released_duallora(path: str | os.PathLike) -> dict[str, list[ReleasedLayer]]:
    """{domain: [(down, up, network_alpha), ...]} of a released duallora.bin (or a checkpoint folder holding it)."""
    file = Path(path).expanduser()
    file = file / RELEASED_LORA if file.is_dir() else file
    if not file.is_file():
        raise UserError(f"{path}: no {RELEASED_LORA}; expected the released Uni-DlLoRA checkpoint folder")
    content = _unpickle(file)
    if not isinstance(content, dict):
        raise UserError(f"{file}: expected a dict with {', '.join(RELEASED_KEYS.values())}, got {type(content).__name__}")
    return {domain: _layers(content, key, file) for domain, key in RELEASED_KEYS.items()}


def _rank_and_alpha(layers: list[ReleasedLayer], source: str) -> tuple[int, float]:
    """The domain's common rank and alpha (PEFT needs one per adapter; the released code used one)."""
    ranks = {down.shape[0] for down, _, _ in layers}
    alphas = {float(alpha) if alpha is not None else float(down.shape[0]) for down, _, alpha in layers}
    if len(ranks) != 1 or len(alphas) != 1:
        raise UserError(f"{source}: layers have ranks {sorted(ranks)} and alphas {sorted(alphas)}; expected one of each")
    return ranks.pop(), alphas.pop()


def load_released_duallora(unet: torch.nn.Module, path: str | os.PathLike) -> None:
    """Inject `real` and `illustration` LoRAs into `unet` filled from the released duallora.bin."""
    released = read_released_duallora(path)
    names = attention_projections(unet)
    for domain in DOMAINS:
        layers, source = released[domain], f"{path} ({RELEASED_KEYS[domain]})"
        if len(layers) != len(names):
            raise UserError(f"{source}: {len(layers)} LoRA layers, but this base UNet has {len(names)} attention "
                            f"projections ({len(names) // 4} attention modules x 4); use the base model it was trained on (SD 1.5)")
        rank, alpha = _rank_and_alpha(layers, source)
        with second_adapter_allowed():
            add_lora(unet, rank, alpha, 0.0, UNET_TARGETS, adapter_name=domain)
        with torch.no_grad():
            for name, (down, up, _) in zip(names, layers):
                module = unet.get_submodule(name)
                lora_a, lora_b = module.lora_A[domain].weight, module.lora_B[domain].weight
                if down.shape != lora_a.shape or up.shape != lora_b.shape:
                    raise UserError(f"{source}: {name} has down {tuple(down.shape)} / up {tuple(up.shape)}, this UNet needs "
                                    f"{tuple(lora_a.shape)} / {tuple(lora_b.shape)}; use the base model it was trained on")
                lora_a.copy_(down)
                lora_b.copy_(up)
    logger.info("converted the released dual LoRA %s (%d layers per domain)", path, len(names))


def convert_released_checkpoint(source: str | os.PathLike, target: str | os.PathLike, unet: torch.nn.Module) -> Path:
    """Write TARGET in atelier's layout (lora/<domain>/, adapter/, adapter_1/, pidnet/) from a released SOURCE folder."""
    source, target = Path(source).expanduser(), Path(target).expanduser()
    load_released_duallora(unet, source)
    save_dual_lora(target / "lora", unet)
    for folder in (ADAPTER_FOLDER, f"{ADAPTER_FOLDER}_1", PIDINET_FOLDER):
        if (source / folder).is_dir():
            shutil.copytree(source / folder, target / folder, dirs_exist_ok=True)
    return target
