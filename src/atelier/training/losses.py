"""Shared pieces of every denoising-diffusion training task: the noise/loss math and cached-latent sampling.

The scheduler owns all noise math (`add_noise`, `get_velocity`); tasks only pick timesteps and weight the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F


@dataclass
class DiffusionLossConfig:
    """Options of the denoising loss shared by text2img, style-lora and the other diffusion tasks."""

    train_strength: float = 1.0  # timesteps drawn in [0, T x train_strength)
    timestep_sampling: Literal["uniform", "cubic"] = "uniform"  # cubic: t = (1 - u^3) T, CFLD's recipe
    min_snr_gamma: float | None = None  # Min-SNR weighting (Hang et al. 2023); 5.0 is the paper's value
    noise_offset: float = 0.0  # per-channel offset noise (Guttenberg 2023)


def sample_timesteps(batch: int, num_train_timesteps: int, cfg: DiffusionLossConfig, generator: torch.Generator,
                     device: torch.device) -> torch.Tensor:
    """Integer timesteps in [0, T x train_strength), uniform or cubic (more weight on noisy steps)."""
    upper = max(1, int(round(num_train_timesteps * cfg.train_strength)))
    if cfg.timestep_sampling == "cubic":
        u = torch.rand(batch, generator=generator, device=device)
        return ((1 - u**3) * upper).long().clamp_(0, upper - 1)
    return torch.randint(0, upper, (batch,), generator=generator, device=device)


def snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at the given timesteps."""
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas_cumprod / (1 - alphas_cumprod)


def denoising_loss(unet, scheduler, latents: torch.Tensor, encoder_hidden_states: torch.Tensor, generator: torch.Generator,
                   cfg: DiffusionLossConfig, weight: torch.Tensor | None = None, **unet_kwargs) -> torch.Tensor:
    """The DDPM training objective: noise the latents at random timesteps, predict the scheduler's target, MSE.
    `weight`: per latent cell (B, 1, h, w), the squared errors' weights (a weighted mean; None: all 1)."""
    batch, channels = latents.shape[:2]
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    if cfg.noise_offset:
        offset = torch.randn((batch, channels, 1, 1), generator=generator, device=latents.device, dtype=latents.dtype)
        noise = noise + cfg.noise_offset * offset
    timesteps = sample_timesteps(batch, scheduler.config.num_train_timesteps, cfg, generator, latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction_type = scheduler.config.prediction_type
    target = scheduler.get_velocity(latents, noise, timesteps) if prediction_type == "v_prediction" else noise
    prediction = unet(noisy, timesteps, encoder_hidden_states, **unet_kwargs).sample
    if cfg.min_snr_gamma is None and weight is None:
        return F.mse_loss(prediction.float(), target.float())
    squared = F.mse_loss(prediction.float(), target.float(), reduction="none")
    if weight is not None:
        cells = weight.float().expand_as(squared)
        per_example = (squared * cells).sum(dim=(1, 2, 3)) / cells.sum(dim=(1, 2, 3)).clamp_min(1e-8)
    else:
        per_example = squared.mean(dim=(1, 2, 3))
    if cfg.min_snr_gamma is None:
        return per_example.mean()
    ratio = snr(scheduler, timesteps)
    snr_weight = torch.clamp(ratio, max=cfg.min_snr_gamma) / (ratio + 1 if prediction_type == "v_prediction" else ratio)
    return (per_example * snr_weight).mean()


def sample_latents(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw from cached VAE posteriors (as diffusers' examples do with latent_dist.sample())."""
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * noise
