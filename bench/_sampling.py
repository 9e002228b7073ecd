"""Text-to-image and translate rows: our pipelines (with `SpeedConfig()`) against diffusers' plain pipelines.

Reference: diffusers' `StableDiffusionPipeline` / `StableDiffusionImg2ImgPipeline` built from the very component
objects passed in (no safety checker), default settings (fp32, its default attention processor), the same scheduler
kind (DDIM), steps, guidance and strength. Ours: `diffusion.text2img.generate` / `diffusion.img2img.translate` on a deep
copy of the components given `apply_speed(copy, SpeedConfig())` (`--compile`: with torch.compile), so the reference
stays plain. Every timed call gets prompts no call used before (the text cache may only reuse the empty negative
prompt, as in real use).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from functools import partial
from typing import Callable

import torch

from bench._flops import split_per_call
from bench._measure import side_by_side, synchronize, under, weight_bytes
from bench._report import Row
from bench._sizes import SuiteSize, ours_speed

PROMPT = "a photo of a woman wearing a red striped dress"


class Prompts:
    """Fresh prompts for every call: `next(batch)` returns `batch` prompts never handed out before."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def next(self, batch: int) -> list[str]:
        return [f"{PROMPT}, look {next(self._counter)}" for _ in range(batch)]


def reference_pipelines(components) -> tuple[object, object]:
    """diffusers' text-to-image and img2img pipelines on `components`, with their default settings."""
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    parts = {"vae": components.vae, "text_encoder": components.text_encoder, "tokenizer": components.tokenizer,
             "unet": components.unet, "safety_checker": None, "feature_extractor": None,
             "requires_safety_checker": False}
    text2img = StableDiffusionPipeline(**parts, scheduler=DDIMScheduler.from_config(components.scheduler.config))
    img2img = StableDiffusionImg2ImgPipeline(**parts, scheduler=DDIMScheduler.from_config(components.scheduler.config))
    for pipe in (text2img, img2img):
        pipe.set_progress_bar_config(disable=True)  # display only; not a speed setting
    return text2img, img2img


def fast_copy(components, speed, device: torch.device) -> tuple[object, float]:
    """(a deep copy of `components` given `apply_speed(copy, speed)`, seconds the copy and that took)."""
    from atelier.diffusion.speed import apply_speed

    synchronize(device)
    started = time.perf_counter()
    ours = apply_speed(copy.deepcopy(components), speed, device)
    synchronize(device)
    return ours, time.perf_counter() - started


def _modules(components) -> list[torch.nn.Module]:
    return [components.unet, components.vae, components.text_encoder]


def _row(name: str, size: SuiteSize, calls: dict[str, Callable[[], object]], warmups: dict[str, Callable[[], object]],
         weights: dict[str, int], flops: int, details: dict) -> Row:
    measured = side_by_side(calls, weights, size.device, size.repeats, warmups)
    ours, reference = measured["ours"], measured["reference"]
    return Row(name, "s", ours.seconds, reference.seconds, ours.peak_bytes, reference.peak_bytes, flops=flops,
               warmup_s={"ours": ours.warmup_s, "reference": reference.warmup_s},
               details={**details, "runs_s": {"ours": ours.runs, "reference": reference.runs}})


def sampling_rows(size: SuiteSize, components, ours, only: set[str], torch_defaults: Callable[[], None]) -> list[Row]:
    """Rows for text-to-image (`t2i`) then translate, as `only` selects: each batch size, each number of steps.

    `torch_defaults` restores torch's backend flags as they were before `apply_speed`: the reference runs under them.
    """
    from atelier.diffusion.img2img import translate
    from atelier.diffusion.speed import set_backend_flags
    from atelier.diffusion.text2img import generate

    flags = {"reference": torch_defaults, "ours": partial(set_backend_flags, ours_speed(size), size.device)}

    text2img, img2img = reference_pipelines(components)
    weights = {"ours": weight_bytes(_modules(ours)), "reference": weight_bytes(_modules(components))}
    height, width = size.image_hw
    common = {"guidance_scale": size.guidance_scale, "scheduler": "ddim", "show_progress": False}
    prompts = Prompts()
    inputs = {batch: torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(batch)) * 2 - 1
              for batch in size.batches}  # made once, outside the timed calls

    def t2i(models, batch: int, steps: int, strength: float) -> object:
        """Text-to-image on `models` (diffusers' pipeline or our components); `strength` is 1 here (every step runs)."""
        if models is text2img:
            return text2img(prompts.next(batch), height=height, width=width, num_inference_steps=steps,
                            guidance_scale=size.guidance_scale)
        return generate(models, prompts.next(batch), size_hw=size.image_hw, steps=steps, **common)

    def sdedit(models, batch: int, steps: int, strength: float) -> object:
        """SDEdit translation of `batch` fixed random images on `models` (diffusers' pipeline or our components)."""
        images = inputs[batch]
        if models is img2img:  # diffusers normalizes [0, 1] tensors to [-1, 1] itself
            return img2img(prompts.next(batch), image=(images + 1) / 2, strength=strength, num_inference_steps=steps,
                           guidance_scale=size.guidance_scale)
        return translate(models, images, prompts.next(batch), strength=strength, steps=steps, **common)

    tasks = {"t2i": ("text-to-image", t2i, text2img, 1.0), "translate": ("translate", sdedit, img2img, size.strength)}
    rows = []
    for task in (name for name in tasks if name in only):
        label, call, reference, strength = tasks[task]
        for batch in size.batches:
            # FLOPs of the plain components: fixed (text encoder, VAE) + per UNet call, counted at strength 1
            torch_defaults()
            fixed, per_call = split_per_call(lambda n, call=call, batch=batch: call(components, batch, n, 1.0))
            for steps in size.steps:
                unet_calls = min(int(steps * strength), steps)  # SDEdit runs the last `strength` share of the steps
                runs = f" ({unet_calls} run)" if unet_calls != steps else ""
                warm = max(2, math.ceil(2 / strength))  # a short call of the same shapes, at least one UNet call
                models = {"reference": reference, "ours": ours}
                calls = {name: under(flags[name], partial(call, models[name], batch, steps, strength)) for name in models}
                warmups = {name: under(flags[name], partial(call, models[name], batch, warm, strength)) for name in models}
                details = {"task": task, "steps": steps, "batch": batch, "strength": strength, "unet_calls": unet_calls}
                rows.append(_row(f"{label} {steps} steps{runs}, batch {batch}", size, calls, warmups, weights,
                                 fixed + unet_calls * per_call, details))
    return rows
