"""Encodings a task computes once, before training: images, VAE posteriors, caption embeddings (or token ids).

The frozen VAE and text encoder would compute the same thing every step, so tasks encode every image (and its flip)
and every distinct caption once and index the result by example: `load_images` stacks the images (flips after
them, so row n + i mirrors row i), `encode_latents` keeps their posteriors and draws a latent per step,
`cache_captions` embeds each distinct caption once, or keeps token ids when the text encoder trains (its gradients
need the forward pass every step).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from atelier.data.transforms import CropMode, load_image_tensor
from atelier.diffusion.encode import encode_images, encode_prompts
from atelier.training.losses import sample_latents
from atelier.utils.progress import progress

logger = logging.getLogger(__name__)


def load_images(files: Sequence[str | os.PathLike], resolution: tuple[int, int], crop: CropMode = "resize",
                flip: bool = False, desc: str = "load images") -> torch.Tensor:
    """The images as one (N, 3, H, W) tensor in [-1, 1]; with `flip`, their mirror images follow (2N rows)."""
    images = torch.stack([load_image_tensor(file, resolution, crop) for file in progress(files, desc=desc)])
    return torch.cat([images, images.flip(-1)]) if flip else images


@dataclass
class Latents:
    """VAE posteriors of images, row for row: mean and standard deviation, already times the scaling factor."""

    mean: torch.Tensor
    std: torch.Tensor

    def __len__(self) -> int:
        return len(self.mean)

    def __getitem__(self, rows: torch.Tensor) -> Latents:
        return Latents(self.mean[rows], self.std[rows])

    @staticmethod
    def cat(parts: Sequence[Latents]) -> Latents:
        """The rows of several posteriors, one after the other."""
        return Latents(torch.cat([part.mean for part in parts]), torch.cat([part.std for part in parts]))

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """One latent per row drawn from its posterior (as diffusers' examples do with latent_dist.sample())."""
        return sample_latents(self.mean, self.std, generator)


def encode_latents(vae: torch.nn.Module, images: torch.Tensor) -> Latents:
    """The VAE posterior of every image (no gradients), on the VAE's device."""
    return Latents(*encode_images(vae, images))


@dataclass
class Captions:
    """Each distinct caption (and the empty one) once; example i uses row `index[i]` of `embeddings` or `token_ids`."""

    distinct: list[str]  # sorted, "" included
    index: torch.Tensor
    empty: int  # the row of "" (caption dropout's unconditional input)
    embeddings: torch.Tensor | None = None  # frozen text encoder: its last hidden states, cached
    token_ids: torch.Tensor | None = None  # training text encoder: encoded every step

    def text(self, rows: torch.Tensor, text_encoder: torch.nn.Module) -> torch.Tensor:
        """Text embeddings of caption rows `rows`: cached, or encoded now (with gradients) when the encoder trains."""
        if self.token_ids is not None:
            return text_encoder(self.token_ids[rows])[0]
        return self.embeddings[rows]


def cache_captions(captions: Sequence[str], tokenizer, text_encoder: torch.nn.Module, device: torch.device, *,
                   copies: int = 1, encoder_trains: bool = False) -> Captions:
    """Captions of every example, encoded (or tokenized) once per distinct caption; `copies`: flipped repeats."""
    distinct = sorted(set(captions) | {""})
    token_ids = embeddings = None
    if encoder_trains:
        token_ids = tokenizer(distinct, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                              return_tensors="pt").input_ids.to(device)
    else:
        embeddings = encode_prompts(tokenizer, text_encoder, distinct, device)
    row = {caption: i for i, caption in enumerate(distinct)}
    index = torch.tensor([row[caption] for caption in captions] * copies, device=device)
    logger.info("cached %d caption %s", len(distinct), "token ids" if encoder_trains else "embeddings")
    return Captions(distinct, index, row[""], embeddings, token_ids)
