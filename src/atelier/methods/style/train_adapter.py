"""Task `image-adapter`: train an IP-Adapter-style image adapter (Ye et al. 2023) on any image folder.

As in IP-Adapter's training: the UNet, VAE, text encoder and image encoder are frozen; only the image projection and
the cross-attentions' `to_k_ip` / `to_v_ip` train (initialised from the text `to_k` / `to_v`), with the denoising loss
on each image conditioned on its own CLIP image embedding. The embedding is replaced by zeros with probability
`image_dropout` (IP-Adapter uses 0.05), which is the "no image" input classifier-free guidance uses at sampling.
No captions are needed: every image is paired with the fixed `prompt` (empty by default). VAE latents, image
embeddings and the prompt's embedding are computed once and cached. `image_encoder` is a folder with a transformers
`CLIPVisionModelWithProjection` (e.g. IP-Adapter's models/image_encoder) or `tiny` (random, for tests and the demo);
`init_from` continues from an existing adapter (e.g. the published ip-adapter_sd15) instead of IP-Adapter's init.
Output: RUN/final/ip-adapter.safetensors (published layout) + RUN/final/image_encoder/.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from atelier.config import ModelConfig, TrainConfig
from atelier.diffusion.components import SDComponents, freeze
from atelier.diffusion.encode import encode_prompts
from atelier.diffusion.image_adapter import attach_image_adapter, load_image_adapter, tiny_image_encoder
from atelier.errors import UserError
from atelier.training.base import TaskBase
from atelier.training.cache import encode_latents, load_images
from atelier.training.losses import DiffusionLossConfig, denoising_loss
from atelier.training.tasks.autoencoder import ImageFolderConfig, list_images

logger = logging.getLogger(__name__)


@dataclass
class ImageAdapterSampleConfig:
    count: int = 4  # image variations of the first training images (strength 1, adapter scale 1)
    steps: int = 20
    guidance_scale: float = 3.0


@dataclass
class ImageAdapterConfig:
    task: Literal["image-adapter"] = "image-adapter"
    model: ModelConfig = field(default_factory=ModelConfig)
    image_encoder: str = "tiny"
    init_from: str | None = None
    data: ImageFolderConfig = field(default_factory=ImageFolderConfig)
    prompt: str = ""
    image_dropout: float = 0.05
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: DiffusionLossConfig = field(default_factory=DiffusionLossConfig)
    sample: ImageAdapterSampleConfig = field(default_factory=ImageAdapterSampleConfig)


def _image_encoder(source: str):
    """The frozen image encoder named by the config: `tiny` or a CLIPVisionModelWithProjection folder."""
    from transformers import CLIPVisionModelWithProjection

    if source == "tiny":
        return tiny_image_encoder()
    if not (Path(source) / "config.json").is_file():
        raise UserError(f"image_encoder {source}: expected `tiny` or a folder with a CLIPVisionModelWithProjection "
                        "(config.json + weights), e.g. IP-Adapter's models/image_encoder")
    return CLIPVisionModelWithProjection.from_pretrained(source)


class ImageAdapterTask(TaskBase):
    """Denoising conditioned on each image's own embedding; only the adapter's layers train."""

    def __init__(self, cfg: ImageAdapterConfig, components: SDComponents | None = None, device: str | torch.device | None = None):
        super().__init__(cfg, components, device, frozen=("unet", "vae", "text_encoder"))
        if cfg.init_from:
            self.adapter = load_image_adapter(cfg.init_from, self.components.unet)
        else:
            torch.manual_seed(cfg.train.seed)  # the projection's initial weights are a function of the seed
            self.adapter = attach_image_adapter(self.components.unet, _image_encoder(cfg.image_encoder))
        freeze(self.adapter.image_encoder)
        for param in self.adapter.parameters().values():
            param.requires_grad_(True)
        images = load_images(list_images(cfg.data.roots)[: cfg.data.max_images], cfg.data.resolution, cfg.data.crop)
        self.latents = encode_latents(self.components.vae, images)
        self.image_embeds = torch.cat([self.adapter.embed(chunk) for chunk in images.split(64)])
        self.text_embedding = encode_prompts(self.components.tokenizer, self.components.text_encoder, [cfg.prompt], self.device)
        self.sample_images = images[: cfg.sample.count]
        logger.info("cached %d latents and image embeddings %s", len(images), tuple(self.image_embeds.shape[1:]))

    def num_examples(self) -> int:
        return len(self.latents)

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator, step: int) -> torch.Tensor:
        latents = self.latents[batch].sample(generator)
        embeds = self.image_embeds[batch]
        if self.cfg.image_dropout:
            keep = torch.rand(len(batch), generator=generator, device=self.device) >= self.cfg.image_dropout
            embeds = embeds * keep.view(-1, 1, 1).to(embeds.dtype)
        text = self.text_embedding.expand(len(batch), -1, -1)
        return denoising_loss(self.components.unet, self.components.scheduler, latents, text, generator, self.cfg.loss,
                              added_cond_kwargs={"image_embeds": [embeds]})

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return self.adapter.parameters()

    def save_outputs(self, folder: Path) -> None:
        self.adapter.save(folder)

    def sample(self, folder: Path, step: int) -> None:
        """Image variations (strength 1: from noise, conditioned only on the image): inputs on top, samples below."""
        from atelier.diffusion.img2img import translate
        from atelier.utils.images import make_grid, tensor_to_pil
        from atelier.utils.io import save_image

        out = translate(self.components, self.sample_images, [self.cfg.prompt] * len(self.sample_images), strength=1.0,
                        steps=self.cfg.sample.steps, guidance_scale=self.cfg.sample.guidance_scale,
                        image_adapter=self.adapter, image_cond_scale=1.0, show_progress=False)
        save_image(make_grid([[tensor_to_pil(x) for x in self.sample_images], out.images]), folder / f"step-{step:07d}.png")
