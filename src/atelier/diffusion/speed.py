"""Inference speed features for the sampling pipelines, each switchable; `SpeedConfig.plain()` is the reference path.

The recipe is diffusion-fast's (docs/speed.md: bf16, SDPA, fused QKV, channels-last, torch.compile), applied
module by module so our own attention processors survive it:
- dtype: weights in bf16 (fp16) on CUDA; the pipelines keep latents and all scheduler math in fp32 and cast only the
  model inputs, so a lower precision changes the network's rounding, never the sampler's.
- sdpa: every diffusers attention runs `torch.nn.functional.scaled_dot_product_attention` (IP-Adapter processors are
  swapped between their SDPA and classic classes with their weights kept); processors we do not know (CFLD's query-bias
  processor, which always uses SDPA) are left as they are. The CLIP encoders use transformers' "sdpa" or "eager".
- fuse_qkv: one matmul for q, k and v (self-attention) or k and v (cross-attention), with diffusers' own
  `Attention.fuse_projections` and `FusedAttnProcessor2_0`, but only where the processor is a plain one (diffusers'
  `UNet2DConditionModel.fuse_qkv_projections` would replace IP-Adapter and CFLD processors too) and the projections are
  plain Linear layers (a PEFT LoRA wrapper would be bypassed by the fused copy).
- fuse_lora: each LoRA is merged at its current scale and its PEFT wrappers are removed (the scale is fixed from then
  on), so sampling runs at the base model's speed and QKV fusion applies.
- channels_last, compile (`nn.Module.compile`, so the module keeps its attributes), TF32 and cuDNN autotuning on CUDA.
- vae_slicing / vae_tiling: diffusers' own `enable_slicing` (a batch goes through the VAE one image at a time when it
  holds more than one) and `enable_tiling` (auto: only images above TILE_ABOVE px on a side, in tiles of that size).
- cache_text: text embeddings of repeated prompts are reused (`atelier.diffusion.encode`).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch

from atelier.diffusion.components import vae_scale
from atelier.errors import UserError

logger = logging.getLogger(__name__)

DType = Literal["auto", "fp32", "bf16", "fp16"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TILE_ABOVE = 1024  # auto VAE tiling: images larger than this many pixels on a side go through in tiles of this size


@dataclass
class SpeedConfig:
    """Which inference speed features are on; the defaults are the fast path, `plain()` the reference path."""

    dtype: DType = "auto"  # "auto" = bf16 on CUDA, fp32 on CPU
    sdpa: bool = True  # torch scaled_dot_product_attention in every attention processor we know
    channels_last: bool | None = None  # None = auto: on for CUDA, off on CPU (measured slower there at tiny size)
    fuse_qkv: bool = True  # fused QKV projections where the processor and the projections allow it
    fuse_lora: bool = True  # LoRA merged into the weights (and its wrappers removed) for inference
    compile: bool = False  # torch.compile of the UNet (falls back to eager when no compiler works here)
    compile_mode: CompileMode = "default"  # "max-autotune" searches kernels: faster sampling, much longer compile
    tf32: bool = True  # TF32 matmuls and convolutions on CUDA (no-op on CPU)
    cudnn_benchmark: bool = True  # cuDNN picks the fastest convolution algorithm per shape on CUDA (no-op on CPU)
    vae_slicing: bool = True  # VAE encodes/decodes a batch one image at a time when it holds more than one
    vae_tiling: bool | None = None  # None = auto: tiles only for images larger than TILE_ABOVE px on a side
    cache_text: bool = True  # reuse text embeddings of repeated prompts

    @classmethod
    def plain(cls) -> "SpeedConfig":
        """Every feature off, fp32: the reference path the fast one is tested against."""
        return cls(dtype="fp32", sdpa=False, channels_last=False, fuse_qkv=False, fuse_lora=False, compile=False,
                   tf32=False, cudnn_benchmark=False, vae_slicing=False, vae_tiling=False, cache_text=False)

    def torch_dtype(self, device: torch.device | str) -> torch.dtype:
        """The weight dtype on `device`: "auto" is bf16 on CUDA and fp32 elsewhere; fp16 needs CUDA."""
        device_type = torch.device(device).type
        if self.dtype == "auto":
            return torch.bfloat16 if device_type == "cuda" else torch.float32
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype {self.dtype}: expected one of auto, {', '.join(DTYPES)}")
        if self.dtype == "fp16" and device_type != "cuda":
            raise UserError(f"--dtype fp16 on {device_type}: half precision is for CUDA; use --dtype fp32 or bf16 here")
        return DTYPES[self.dtype]

    def use_channels_last(self, device: torch.device | str) -> bool:
        return torch.device(device).type == "cuda" if self.channels_last is None else self.channels_last


def apply_speed(components, speed: SpeedConfig, device: torch.device | str | None = None):
    """Apply `speed` to SD components in place (moved to `device` first when given); returns them.

    Meant once per loaded model: a later call can change the dtype, attention, layout, VAE and text-cache settings, but
    not undo LoRA fusion or compilation.
    """
    from atelier.diffusion.encode import enable_text_cache
    from atelier.diffusion.lora import fuse_lora

    device = torch.device(device) if device is not None else next(components.unet.parameters()).device
    dtype = speed.torch_dtype(device)
    components.to(device)
    set_backend_flags(speed, device)
    if speed.fuse_lora:
        fuse_lora([components.text_encoder])
    set_encoder_attention(components.text_encoder, speed.sdpa)
    cast(components.text_encoder, dtype)
    enable_text_cache(components.text_encoder, speed.cache_text)  # also drops embeddings of the old weights
    apply_speed_to_unet(components.unet, speed, device)
    apply_speed_to_vae(components.vae, speed, device)
    return components


def apply_speed_to_unet(unet: torch.nn.Module, speed: SpeedConfig, device: torch.device | str | None = None) -> torch.nn.Module:
    """Apply `speed` to a UNet in place (also one inside another model, e.g. CFLD's):
    LoRA fusion, attention processors, dtype, memory layout, compilation."""
    from atelier.diffusion.lora import fuse_lora

    device = torch.device(device) if device is not None else next(unet.parameters()).device
    unet.to(device)
    set_backend_flags(speed, device)
    if speed.fuse_lora:
        fuse_lora([unet])
    counts = set_attention(unet, speed.sdpa, speed.fuse_qkv)
    cast(unet, speed.torch_dtype(device))
    set_layout(unet, speed.use_channels_last(device))
    compiled = speed.compile and compile_module(unet, speed.compile_mode, device)
    logger.info("speed: %s weights, attention processors %s, channels-last %s, compiled %s",
                str(speed.torch_dtype(device)).removeprefix("torch."), counts, speed.use_channels_last(device), compiled)
    return unet


def apply_speed_to_vae(vae: torch.nn.Module, speed: SpeedConfig, device: torch.device | str | None = None) -> torch.nn.Module:
    """Apply `speed` to an AutoencoderKL in place: attention, dtype, layout, slicing and tiling."""
    device = torch.device(device) if device is not None else next(vae.parameters()).device
    vae.to(device)
    set_attention(vae, speed.sdpa, speed.fuse_qkv)
    cast(vae, speed.torch_dtype(device))
    set_layout(vae, speed.use_channels_last(device))
    if speed.vae_slicing:
        vae.enable_slicing()
    else:
        vae.disable_slicing()
    if speed.vae_tiling is False:
        vae.disable_tiling()
        return vae
    # forced on: tiles of the model's sample size (512 px on SD 1.5); auto: only above TILE_ABOVE px, in tiles that big
    sample_size = vae.config.sample_size
    sample_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
    tile = sample_size if speed.vae_tiling else max(sample_size, TILE_ABOVE)
    vae.tile_sample_min_size = tile
    vae.tile_latent_min_size = tile // vae_scale(vae)
    vae.enable_tiling()
    return vae


def cast(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Floating-point weights to `dtype`, skipped when they are there already. Through torch's own Module.to unless the
    model keeps modules in fp32: diffusers' `to` warns on every dtype cast, also for models without such modules."""
    if all(p.dtype == dtype for p in module.parameters() if p.is_floating_point()):
        return
    if getattr(module, "_keep_in_fp32_modules", None):
        module.to(dtype=dtype)
    else:
        torch.nn.Module.to(module, dtype=dtype)


def set_layout(module: torch.nn.Module, channels_last: bool) -> None:
    """4-D weights (convolutions) in channels-last memory order (NHWC), or back in the default contiguous order."""
    module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def set_backend_flags(speed: SpeedConfig, device: torch.device | str) -> None:
    """Turn TF32 and cuDNN autotuning on, on CUDA only, when `speed` asks (process-wide torch settings).

    A feature that is off leaves torch's own setting alone (torch's default already allows TF32 in cuDNN
    convolutions), so loading a plain model never changes what other models in the process run under.
    """
    if torch.device(device).type != "cuda":
        return
    # the allow_tf32 flags, not torch >= 2.9's fp32_precision: after the new API, reading allow_tf32 raises (diffusers,
    # transformers and accelerate read it); setting allow_tf32 keeps both readable
    if speed.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if speed.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True


def set_encoder_attention(encoder: torch.nn.Module, sdpa: bool) -> None:
    """A transformers encoder (CLIP text or vision) on its "sdpa" or "eager" attention."""
    wanted = "sdpa" if sdpa else "eager"
    if getattr(encoder.config, "_attn_implementation", wanted) != wanted:
        encoder.set_attn_implementation(wanted)


def _fusable(attention) -> bool:
    """Fusion keeps the output only with plain Linear projections and the default 1/sqrt(head dim) scale (the fused
    processor ignores `attention.scale`)."""
    projections = (attention.to_q, attention.to_k, attention.to_v)
    if any(type(p) is not torch.nn.Linear for p in projections):  # a PEFT LoRA wrapper: the fused copy would skip it
        return False
    head_dim = attention.to_q.out_features // attention.heads
    return math.isclose(attention.scale, head_dim ** -0.5, rel_tol=1e-6)


def _ip_processor(processor, sdpa: bool):
    """The IP-Adapter processor of the wanted kind (SDPA or classic) carrying the same image projections and scale."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0

    kind = IPAdapterAttnProcessor2_0 if sdpa else IPAdapterAttnProcessor
    if isinstance(processor, kind):
        return processor
    swapped = kind(processor.hidden_size, processor.cross_attention_dim, processor.num_tokens, processor.scale)
    swapped.to_k_ip, swapped.to_v_ip = processor.to_k_ip, processor.to_v_ip
    return swapped


def set_attention(model: torch.nn.Module, sdpa: bool, fuse_qkv: bool) -> dict[str, int]:
    """Give every diffusers Attention in `model` an SDPA (fused where safe) or classic processor; return counts per kind.

    Processors other than diffusers' plain and IP-Adapter ones (e.g. CFLD's query bias) are kept as they are.
    """
    from diffusers.models.attention_processor import (
        Attention,
        AttnProcessor,
        AttnProcessor2_0,
        FusedAttnProcessor2_0,
        IPAdapterAttnProcessor,
        IPAdapterAttnProcessor2_0,
    )

    counts = {"fused": 0, "sdpa": 0, "classic": 0, "ip-adapter": 0, "kept": 0}
    for module in model.modules():
        if not isinstance(module, Attention):
            continue
        processor = module.processor
        if isinstance(processor, (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0)):
            module.set_processor(_ip_processor(processor, sdpa))
            counts["ip-adapter"] += 1
        elif type(processor) in (AttnProcessor, AttnProcessor2_0, FusedAttnProcessor2_0):
            if sdpa and fuse_qkv and _fusable(module):
                module.fuse_projections()  # a fresh copy of the current q/k/v weights
                module.set_processor(FusedAttnProcessor2_0())
                counts["fused"] += 1
            else:
                module.fused_projections = False
                module.set_processor(AttnProcessor2_0() if sdpa else AttnProcessor())
                counts["sdpa" if sdpa else "classic"] += 1
        else:
            counts["kept"] += 1
    return {kind: count for kind, count in counts.items() if count}


@functools.cache
def error_line(error: BaseException) -> str:
    """`Type: first line` of the innermost error (torch.compile wraps its backend's error in BackendCompilerFailed)."""
    while isinstance(inner := getattr(error, "inner_exception", None) or error.__cause__, BaseException):
        error = inner
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def compiler_error(device_type: str, backend: str | Callable = "inductor", backward: bool = False) -> str | None:
    """None when torch.compile works on this device type (forward, and backward when asked), else its error line."""
    def probe(x: torch.Tensor) -> torch.Tensor:
        return (torch.sin(x) * x).sum()

    try:
        x = torch.ones(8, device=device_type, requires_grad=backward)
        loss = torch.compile(probe, backend=backend)(x)
        if backward:
            loss.backward()
    except Exception as error:  # any failure of the toolchain (no C++ compiler, no Triton, ...) means: run eagerly
        return error_line(error)
    return None


def compile_module(module: torch.nn.Module, mode: str, device: torch.device | str) -> bool:
    """`module.compile(mode=...)` in place when the compiler works here; otherwise a one-line warning and eager mode."""
    device_type = torch.device(device).type
    error = compiler_error(device_type)
    if error is not None:
        logger.warning("--compile: torch.compile does not work on %s here (%s); running eagerly", device_type, error)
        return False
    module.compile(mode=mode)
    return True
