"""The compute-bound estimate: FLOPs of the work a measurement does, divided by the machine's measured matrix peak.

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (matrix multiplies, convolutions and attention; the
elementwise work it ignores is small beside them) while the plain reference components run the work once, so the
count is the model's arithmetic, not one implementation's. A sampler's count is split into a fixed part (text encoder,
VAE) and a per-UNet-call part by counting the same call with one and with two denoising steps.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """softmax(QK^T)V on CPU: counted as torch counts its CUDA attention kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# torch's counter knows the CUDA attention kernels but not the CPU ones, which would count as zero FLOPs.
CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
                 torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward}


def count_flops(work: Callable[[], object]) -> int:
    """FLOPs (2 per multiply-add) of the matrix work done by one call of `work`."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        work()
    return int(counter.get_total_flops())


def split_per_call(run_with_calls: Callable[[int], object]) -> tuple[int, int]:
    """(fixed FLOPs, FLOPs per UNet call) of a sampler, from counting it with one and with two UNet calls."""
    one, two = count_flops(lambda: run_with_calls(1)), count_flops(lambda: run_with_calls(2))
    return one - (two - one), two - one


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device | str, size: int | None = None, repeats: int = 5) -> dict:
    """The measured matrix peak (FLOP/s): best of `repeats` square GEMMs, bf16 on CUDA, fp32 on CPU."""
    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = size or (8192 if device.type == "cuda" else 1024)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    torch.mm(a, b)  # first call: kernel selection, thread pool start
    best = float("inf")
    for _ in range(repeats):
        _synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        _synchronize(device)
        best = min(best, time.perf_counter() - started)
    return {"flop_per_s": 2 * size**3 / best, "dtype": str(dtype).removeprefix("torch."), "size": size,
            "threads": torch.get_num_threads() if device.type == "cpu" else None}


def lora_training_flops(unet, latent_hw: tuple[int, int], batch: int, rank: int = 8,
                        targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")) -> int:
    """FLOPs of one LoRA training step's UNet forward + backward (base frozen; latents and text embeddings cached)."""
    import copy

    from peft import LoraConfig

    model = copy.deepcopy(unet).train()
    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights="gaussian", target_modules=list(targets)))
    param = next(model.parameters())
    latents = torch.randn(batch, model.config.in_channels, *latent_hw, device=param.device)
    context = torch.randn(batch, 77, model.config.cross_attention_dim, device=param.device)
    timesteps = torch.randint(0, 1000, (batch,), device=param.device)

    def step() -> None:
        prediction = model(latents, timesteps, context).sample
        torch.nn.functional.mse_loss(prediction, latents).backward()

    return count_flops(step)


def style_lora_flop_bound(components, resolution_hw: tuple[int, int]) -> dict:
    """Per image, the FLOPs a diffusers-example LoRA step spends on the frozen VAE encoder and text encoder, and on the
    UNet forward + backward both loops spend; their ratio bounds what caching the frozen parts can gain. Counted on
    shape-only (meta device) copies built from the components' configs: nothing runs."""
    from transformers import CLIPTextModel

    with torch.device("meta"):
        vae = type(components.vae).from_config(components.vae.config)
        unet = type(components.unet).from_config(components.unet.config)
        text_encoder = CLIPTextModel(components.text_encoder.config)
    pixels = torch.zeros(1, 3, *resolution_hw, device="meta")
    tokens = torch.zeros(1, 77, dtype=torch.long, device="meta")
    scale = components.latent_scale
    with torch.no_grad():
        encode = count_flops(lambda: vae.encode(pixels).latent_dist.mean)
        text = count_flops(lambda: text_encoder(tokens))
    train = lora_training_flops(unet, (resolution_hw[0] // scale, resolution_hw[1] // scale), 1)
    return {"vae_encode_flops": encode, "text_encoder_flops": text, "unet_forward_backward_flops": train,
            "steady_ratio_bound": round((encode + text + train) / train, 3)}
