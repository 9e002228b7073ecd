"""Frozen encoders run once: text embeddings of prompts and VAE latents of images (no gradients).

Text embeddings can be cached per text encoder (`enable_text_cache`, which `diffusion.speed.apply_speed` calls): a small
LRU keyed by (tokenizer, prompt, device, dtype), held in a weak dictionary so it dies with its encoder. Weights that
change in place are not visible in such a key, so whatever changes them (LoRA loading, scaling, merging in
`diffusion.lora`; `apply_speed`) calls `clear_text_cache`; encoders never opted in (training) are never cached.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import torch

TEXT_CACHE_SIZE = 64  # prompts kept per text encoder (77 x 768 floats each on SD 1.5: about 15 MB in fp32)

_text_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # text encoder -> OrderedDict(key -> embedding)


def enable_text_cache(text_encoder: torch.nn.Module, enabled: bool = True) -> None:
    """Start (empty) or stop caching the embeddings `encode_prompts` computes with this text encoder."""
    _text_caches.pop(text_encoder, None)
    if enabled:
        _text_caches[text_encoder] = OrderedDict()


def clear_text_cache(text_encoder: torch.nn.Module | None = None) -> None:
    """Forget cached embeddings of one text encoder (all when None); call it after changing its weights in place."""
    caches = list(_text_caches.values()) if text_encoder is None else [_text_caches.get(text_encoder)]
    for cache in caches:
        if cache is not None:
            cache.clear()


@torch.no_grad()
def _encode(tokenizer, text_encoder, prompts: list[str], device: torch.device | str, batch_size: int) -> torch.Tensor:
    outputs = []
    for start in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[start : start + batch_size], padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt")
        outputs.append(text_encoder(tokens.input_ids.to(device))[0])
    return torch.cat(outputs)


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], device: torch.device | str = "cpu", batch_size: int = 64) -> torch.Tensor:
    """Text embeddings (last hidden state) of prompts, padded to the tokenizer's max length; no gradients.

    With the encoder's cache on, each distinct prompt not seen recently is encoded once and the rest are reused.
    """
    cache = _text_caches.get(text_encoder)
    if cache is None:
        return _encode(tokenizer, text_encoder, prompts, device, batch_size)
    dtype = next(text_encoder.parameters()).dtype

    def key(prompt: str) -> tuple:
        return id(tokenizer), prompt, str(torch.device(device)), dtype

    unique = list(dict.fromkeys(prompts))
    found = {prompt: cache[key(prompt)] for prompt in unique if key(prompt) in cache}
    missing = [prompt for prompt in unique if prompt not in found]
    if missing:
        found.update(zip(missing, _encode(tokenizer, text_encoder, missing, device, batch_size)))
    for prompt in unique:  # most recently used last: the oldest go first when the cache is full
        cache[key(prompt)] = found[prompt]
        cache.move_to_end(key(prompt))
    while len(cache) > TEXT_CACHE_SIZE:
        cache.popitem(last=False)
    return torch.stack([found[prompt] for prompt in prompts])


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
