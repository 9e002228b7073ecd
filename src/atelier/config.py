"""Typed configuration: dataclasses loaded from YAML, dotted overrides from the command line, YAML saved beside outputs.

Every section is a dataclass; loading checks each key against the fields, so a typo fails at once naming the key and
the valid ones (no string registries that fail later at run time). Loading (`from_dict`) is also the one place values
are validated, each error naming the dotted key and the expected range: every float must be finite, every image size
field (`SIZE_FIELDS`) within `MIN_IMAGE_SIDE..MAX_IMAGE_SIDE` and a multiple of `IMAGE_MULTIPLE`, and a section with a
`validate(where)` method (TrainConfig) checks its own ranges.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from atelier.errors import UserError

T = TypeVar("T")
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 8, 4096  # pixels; 4096 x 4096 is already past any SD-1.x training size
IMAGE_MULTIPLE = 8  # the SD VAE's pixels per latent cell: other sizes would be cropped silently
SIZE_FIELDS = ("resolution", "image_size", "appearance_size", "pose_size")  # (height, width) image sizes, any section


def require(ok: bool, where: str, expected: str, value: Any) -> None:
    """Raise a UserError naming the dotted key `where`, what was expected and what was given, unless `ok`."""
    if not ok:
        raise UserError(f"{where}: expected {expected}, got {value!r}")


def check_image_size(value: tuple[int, int], where: str) -> None:
    """An image size (height, width): both sides MIN_IMAGE_SIDE..MAX_IMAGE_SIDE pixels and multiples of IMAGE_MULTIPLE."""
    expected = (f"[height, width] with both sides {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} pixels and multiples of "
                f"{IMAGE_MULTIPLE}, e.g. [64, 48]")
    require(len(value) == 2 and all(MIN_IMAGE_SIDE <= side <= MAX_IMAGE_SIDE and side % IMAGE_MULTIPLE == 0
                                    for side in value), where, expected, list(value))


@dataclass
class ModelConfig:
    """Where the base model comes from: `tiny` (built here), a diffusers directory, a .safetensors file or a hub id."""

    base: str = "tiny"
    revision: str | None = None
    config: str | None = None  # single-file checkpoints: a diffusers directory with the matching configs (offline)


@dataclass
class TrainConfig:
    """The shared training loop's settings (atelier.training.loop)."""

    max_steps: int = 1000
    epochs: int | None = None  # when set, max_steps = epochs x steps per epoch
    batch_size: int = 8
    gradient_accumulation: int = 1
    lr: float = 1e-4
    lr_schedule: Literal["constant", "cosine", "linear", "step", "onecycle"] = "constant"
    warmup_steps: int = 0
    lr_step_every: int = 1000  # "step" schedule: multiply by lr_step_gamma every this many steps
    lr_step_gamma: float = 0.5
    optimizer: Literal["adamw", "adam"] = "adamw"
    weight_decay: float = 1e-2
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    ema_decay: float | None = None
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    sample_every: int | None = None
    # speed features (atelier.training.loop; docs/speed.md), each switchable
    fused_optimizer: bool = True  # torch's fused Adam/AdamW kernel where the device and dtype allow it (else foreach)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower steps
    channels_last: bool = False  # convolution weights in NHWC order (no gain measured at tiny size on CPU)
    compile: bool = False  # torch.compile the per-step model (a one-time compile, minutes on CPU); eager if it fails

    def validate(self, where: str = "train") -> None:
        """Refuse settings that would crash the loop or silently train nothing (a 0 batch, a NaN or negative rate)."""
        if self.epochs is None:
            require(self.max_steps >= 1, f"{where}.max_steps", "an integer >= 1 (or set train.epochs)", self.max_steps)
        else:
            require(self.epochs >= 1, f"{where}.epochs", "an integer >= 1 (or null to use max_steps)", self.epochs)
        for name in ("batch_size", "gradient_accumulation", "lr_step_every", "log_every", "checkpoint_every",
                     "keep_checkpoints"):
            require(getattr(self, name) >= 1, f"{where}.{name}", "an integer >= 1", getattr(self, name))
        require(self.sample_every is None or self.sample_every >= 1, f"{where}.sample_every", "an integer >= 1 or null",
                self.sample_every)
        require(self.warmup_steps >= 0, f"{where}.warmup_steps", "an integer >= 0", self.warmup_steps)
        require(self.lr_schedule != "onecycle" or self.warmup_steps == 0, f"{where}.warmup_steps",
                "0 with lr_schedule onecycle (its first 30% of steps are the warm-up)", self.warmup_steps)
        require(self.seed >= 0, f"{where}.seed", "an integer >= 0", self.seed)
        require(self.lr > 0, f"{where}.lr", "a learning rate > 0, e.g. 1e-4", self.lr)
        require(self.lr_step_gamma > 0, f"{where}.lr_step_gamma", "a factor > 0, e.g. 0.5", self.lr_step_gamma)
        require(self.weight_decay >= 0, f"{where}.weight_decay", "a number >= 0", self.weight_decay)
        require(all(0 <= beta < 1 for beta in self.adam_betas), f"{where}.adam_betas", "two numbers in [0, 1)",
                list(self.adam_betas))
        require(self.max_grad_norm is None or self.max_grad_norm >= 0, f"{where}.max_grad_norm",
                "a number >= 0 (0 or null: no clipping)", self.max_grad_norm)
        require(self.ema_decay is None or 0 <= self.ema_decay < 1, f"{where}.ema_decay",
                "a number in [0, 1) or null (no EMA)", self.ema_decay)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one YAML value against a type hint; raise UserError naming `where` on mismatch."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except UserError as error:
                errors.append(str(error))
        raise UserError(errors[0] if errors else f"{where}: got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise UserError(f"{where}: expected one of {list(get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise UserError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        return origin(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer past float's range
            number = math.inf
        require(math.isfinite(number), where, "a finite number (not nan or inf)", value)
        return number
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp in (int, float, bool, str):
        raise UserError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a mapping; unknown keys fail naming the key and the valid ones."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in data if key not in names]
    if unknown:
        raise UserError(f"unknown config key '{where}.{unknown[0]}'; valid keys in {where}: {', '.join(names)}")
    kwargs = {key: _convert(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    for key in SIZE_FIELDS:
        if isinstance(kwargs.get(key), tuple):
            check_image_size(kwargs[key], f"{where}.{key}")
    try:
        obj = cls(**kwargs)
    except TypeError as error:
        raise UserError(f"{where}: {error}") from None
    if hasattr(obj, "validate"):
        obj.validate(where)
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain YAML-able dict (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-4` -> (['train', 'lr'], 0.0001); the value is parsed as YAML."""
    if "=" not in text:
        raise UserError(f"override '{text}': expected KEY=VALUE with a dotted key, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads "1e-4" as a string
    return key.strip().split("."), value


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted overrides to a nested dict (in place) and return it."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise UserError(f"override '{text}': '{key}' is not a section")
            node = child
        node[keys[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with a clear error for a missing or malformed file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config file {path} is a folder, expected a YAML file (see configs/)")
    if not path.is_file():
        raise UserError(f"config file {path} not found; pass the path of a YAML file (see configs/)")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"config file {path} is not UTF-8 text ({error.reason} at byte {error.start}); save it as "
                        "UTF-8") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise UserError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def save_yaml(obj: Any, path: str | Path) -> None:
    """Save a config (dataclass or dict) as YAML atomically."""
    from atelier.utils.io import write_text

    write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


__all__ = [
    "ModelConfig",
    "TrainConfig",
    "MAX_IMAGE_SIDE",
    "check_image_size",
    "require",
    "from_dict",
    "to_dict",
    "apply_overrides",
    "read_yaml",
    "save_yaml",
    "field",
]
