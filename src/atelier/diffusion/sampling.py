"""What every sampling pipeline shares: scheduler choice, SDEdit timesteps, the one denoising loop, decoding.

Pipelines build a `predict_noise(latents, t)` closure (guidance, adapters, LoRA scales live there) and hand it to
`denoise`; the scheduler owns all noise math (house style 1), so no pipeline re-derives it.

Every image of a batch draws its noise (initial and per step) from its own generator (`image_generators`,
`randn_per_image`), so an image's result depends only on its seed: not on its place in the batch, on the batch
size, or on which other images share the batch.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import Callable, Literal, Sequence, get_args

import torch

from atelier.errors import UserError
from atelier.utils.progress import progress

SchedulerName = Literal["ddpm", "ddim", "euler", "dpm"]
MIN_SEED, MAX_SEED = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed accepts
SCHEDULERS: tuple[str, ...] = get_args(SchedulerName)  # the commands' --scheduler choices
Seeds = int | Sequence[int]  # an int S: image i of the batch uses S + i; a sequence: one seed per image


def make_scheduler(name: SchedulerName, config) -> object:
    """A diffusers scheduler of the named kind, built from the model's scheduler config."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "dpm": DPMSolverMultistepScheduler}
    if name not in classes:
        raise UserError(f"--scheduler {name!r}: expected one of {', '.join(classes)}")
    return classes[name].from_config(config)


def check_range(flags: dict[str, float | None], low: float = 0.0, high: float = math.inf, why: str = "") -> None:
    """UserError naming the first flag whose value is NaN, infinite, or outside [low, high] (None: not given). NaN
    passes every comparison, so an unchecked `--guidance-scale nan` would draw black images without a word."""
    for flag, value in flags.items():
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            bound = f"at least {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
            raise UserError(f"{flag} {value}: expected a finite number {bound}{why}")


def check_steps(steps: int, flag: str = "--steps") -> None:
    """UserError unless there is at least one sampling step."""
    if steps < 1:
        raise UserError(f"{flag} {steps}: expected a positive integer (sampling steps)")


def check_seeds(seed: int, count: int, flag: str = "--seed") -> None:
    """UserError unless seeds seed .. seed + count - 1 all fit a torch generator's seed range."""
    if seed < MIN_SEED or seed + max(count, 1) - 1 > MAX_SEED:
        raise UserError(f"{flag} {seed}: expected an integer from {MIN_SEED} to {MAX_SEED - max(count, 1) + 1} "
                        f"(image i uses {flag} + i, and a seed must fit in 64 bits)")


def img2img_timesteps(scheduler, steps: int, strength: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """SDEdit: the last `strength` fraction of the schedule's timesteps (diffusers' get_timesteps rule)."""
    check_range({"--strength": strength}, 0.0, 1.0, " (0 keeps the input, 1 ignores it)")
    check_steps(steps)
    scheduler.set_timesteps(steps, device=device)
    keep = min(int(steps * strength), steps)
    start = (steps - keep) * scheduler.order
    return scheduler.timesteps[start:]


def image_seeds(seed: Seeds, count: int) -> list[int]:
    """The seed of each of `count` images: an int S gives S, S+1, ..., S+count-1 (so a batch seeded S equals its images
    run one by one with their own seeds); a sequence names each image's seed and must have one per image."""
    if isinstance(seed, Integral):
        check_seeds(int(seed), count)
        return [int(seed) + index for index in range(count)]
    seeds = [int(value) for value in seed]
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} images; pass one seed per image, or one int S for S, S+1, ...")
    for value in seeds:
        check_seeds(value, 1)
    return seeds


def image_generators(seed: Seeds, count: int, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per image (seeds as `image_seeds`), on `device`: the list diffusers' schedulers take as
    `generator`, drawing image i's step noise from generator i alone."""
    return [torch.Generator(device=device).manual_seed(value) for value in image_seeds(seed, count)]


def _check_one_per_image(generators: Sequence[torch.Generator], batch: int) -> None:
    """ValueError unless there is one generator per image (diffusers would silently use the first `batch`)."""
    if len(generators) != batch:
        raise ValueError(f"got {len(generators)} generators for a batch of {batch}; pass one generator per image")


def randn_per_image(shape: Sequence[int], generators: Sequence[torch.Generator], device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape` (batch first), image i drawn from generators[i] alone: the rule diffusers'
    `randn_tensor` applies to a generator list, so the initial noise follows the same per-image streams as the steps."""
    batch, *rest = shape
    _check_one_per_image(generators, batch)
    return torch.cat([torch.randn((1, *rest), generator=generator, device=device, dtype=dtype) for generator in generators])


def denoise(predict_noise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scheduler, latents: torch.Tensor,
            timesteps: torch.Tensor, generators: Sequence[torch.Generator] | None = None,
            show_progress: bool = True, known: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The one denoising loop: for each timestep, predict the model output and let the scheduler step.

    `generators` (one per image, `image_generators`) feed the noise of stochastic schedulers (DDPM, DDIM with eta > 0,
    SDE solvers): diffusers draws image i's noise from generators[i], so no image's noise depends on its batch.
    `known` = (clean latents, mask, noise): blended-latent inpainting (Avrahami et al. 2023). After every step the
    cells where mask is 0 are replaced by the clean latents noised (with `noise`) to the next step's level, and by the
    clean latents themselves after the last, so only the masked cells are generated, in the context of the rest.
    """
    generator = None
    if generators is not None:
        _check_one_per_image(generators, len(latents))
        generator = list(generators)  # diffusers' randn_tensor recognises a list, not any sequence
    for index, t in enumerate(progress(timesteps, desc="denoise", enabled=show_progress)):
        model_input = scheduler.scale_model_input(latents, t)
        noise_prediction = predict_noise(model_input, t)
        latents = scheduler.step(noise_prediction, t, latents, generator=generator).prev_sample
        if known is not None:
            clean, mask, noise = known
            if index + 1 < len(timesteps):
                clean = scheduler.add_noise(clean, noise, timesteps[index + 1 : index + 2].repeat(len(clean)))
            latents = mask * latents + (1 - mask) * clean.to(latents.dtype)
    return latents


def ddim_invert(predict_noise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scheduler_config, latents: torch.Tensor,
                timesteps: torch.Tensor, steps: int, show_progress: bool = True) -> torch.Tensor:
    """DDIM inversion (Song et al. 2021; as used for editing by Mokady et al. 2023): the deterministic DDIM ODE run
    backwards from clean latents up to the first of `timesteps` (the tail of a `steps`-step DDIM schedule, e.g. from
    `img2img_timesteps`), so DDIM sampling over `timesteps` with the same model and prompt returns the input up to
    discretisation error. diffusers' DDIMInverseScheduler owns the step math."""
    from diffusers import DDIMInverseScheduler

    inverse = DDIMInverseScheduler.from_config(scheduler_config)
    inverse.set_timesteps(steps, device=latents.device)
    for t in progress(timesteps.flip(0), desc="invert", enabled=show_progress):
        latents = inverse.step(predict_noise(latents, t), t, latents).prev_sample
    return latents


def classifier_free_guidance(unet, cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float,
                             image_embeds: tuple[torch.Tensor, torch.Tensor] | None = None,
                             **unet_kwargs) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """eps = eps_uncond + s (eps_cond - eps_uncond) (Ho & Salimans 2022); one batched UNet call when s != 1.

    `image_embeds` = (cond, uncond) image-adapter embeddings (IP-Adapter, Ye et al. 2023), batched like the text.
    The UNet's inputs are cast to its weights' dtype; the guidance and everything after run in fp32.
    """
    dtype = next(unet.parameters()).dtype
    cond, uncond = cond.to(dtype), uncond.to(dtype)
    single, doubled = {}, {}  # the UNet's image inputs for the cond-only and the [uncond; cond] call
    if image_embeds is not None:
        image_cond, image_uncond = (embeds.to(dtype) for embeds in image_embeds)
        single = {"added_cond_kwargs": {"image_embeds": [image_cond]}}
        doubled = {"added_cond_kwargs": {"image_embeds": [torch.cat([image_uncond, image_cond])]}}

    def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        latents = latents.to(dtype)
        if guidance_scale == 1.0:
            return unet(latents, t, cond, **single, **unet_kwargs).sample.float()
        both = unet(torch.cat([latents, latents]), t, torch.cat([uncond, cond]), **doubled, **unet_kwargs).sample
        eps_uncond, eps_cond = both.float().chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    return predict


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Latents -> images in [-1, 1] (scaling factor undone), in fp32 whatever the VAE's dtype."""
    param = next(vae.parameters())
    images = [vae.decode(chunk.to(param.device, param.dtype) / vae.config.scaling_factor).sample
              for chunk in latents.split(batch_size)]
    return torch.cat(images).float().clamp(-1, 1)
