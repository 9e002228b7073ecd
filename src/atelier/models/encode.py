"""Frozen encoders run once: text embeddings of prompts and VAE latents of images (no gradients)."""

from __future__ import annotations

import torch


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], device: torch.device | str = "cpu", batch_size: int = 64) -> torch.Tensor:
    """Text embeddings (last hidden state) of prompts, padded to the tokenizer's max length; no gradients."""
    outputs = []
    for start in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[start : start + batch_size], padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt")
        outputs.append(text_encoder(tokens.input_ids.to(device))[0])
    return torch.cat(outputs)


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior (mean, std) of images in [-1, 1], already multiplied by the scaling factor; no gradients."""
    means, stds = [], []
    scale = vae.config.scaling_factor
    param = next(vae.parameters())
    for start in range(0, len(images), batch_size):
        posterior = vae.encode(images[start : start + batch_size].to(param.device, param.dtype)).latent_dist
        means.append(posterior.mean * scale)
        stds.append(posterior.std * scale)
    return torch.cat(means), torch.cat(stds)
