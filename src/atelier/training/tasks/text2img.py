"""Task `text2img`: train a UNet on a captioned image folder (the embedded default's base model; full fine-tune).

VAE latents and text embeddings are computed once (the VAE and text encoder are frozen) and cached in memory
(atelier.training.cache); each step draws latents from the cached posteriors. Subclasses (style LoRA) change which parameters train.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from atelier.config import ModelConfig, TrainConfig
from atelier.data.transforms import CropMode
from atelier.diffusion.components import SDComponents
from atelier.errors import UserError
from atelier.training.base import TaskBase, filter_listed
from atelier.training.cache import cache_captions, encode_latents, load_images
from atelier.training.losses import DiffusionLossConfig, denoising_loss
from atelier.utils.io import save_image

logger = logging.getLogger(__name__)


@dataclass
class CaptionedDataConfig:
    """A captioned image folder (metadata.jsonl, .txt sidecars or WikiArt names)."""

    root: str = ""
    caption_prefix: str = ""  # identifier prepended to every caption, e.g. "A Monet painting, "
    resolution: tuple[int, int] = (64, 48)  # (height, width) in pixels
    crop: CropMode = "resize"
    flip: bool = False  # horizontal flips (both versions are cached)
    caption_dropout: float = 0.1  # share of steps trained on the empty prompt (enables classifier-free guidance)
    max_images: int | None = None
    list_file: str | None = None  # optional file of names (one per line) restricting the folder, e.g. style/train.lst


@dataclass
class SampleConfig:
    prompts: list[str] = field(default_factory=lambda: ["a woman wearing a red dress"])
    steps: int = 20
    guidance_scale: float = 3.0


@dataclass
class Text2ImgConfig:
    task: Literal["text2img"] = "text2img"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: CaptionedDataConfig = field(default_factory=CaptionedDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: DiffusionLossConfig = field(default_factory=DiffusionLossConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train_text_encoder: bool = False  # also fine-tune the whole text encoder (captions are then encoded every step)


def read_training_items(data: CaptionedDataConfig):
    """The captioned items of the data folder, restricted by list_file and max_images."""
    from atelier.data.formats.captioned import read_captioned_folder

    if not data.root:
        raise UserError("data.root is empty: set it to a captioned image folder (e.g. data.root=runs/demo/data/style/illustration)")
    items = filter_listed(read_captioned_folder(data.root, caption_prefix=data.caption_prefix), data.list_file,
                          lambda item: item.path)
    if data.max_images:
        items = items[: data.max_images]
    if not items:
        raise UserError(f"data.root {data.root}: no captioned images left to train on (check data.list_file)")
    return items


class Text2ImgTask(TaskBase):
    """Denoising on cached latents of a captioned folder; the whole UNet trains."""

    def __init__(self, cfg: Text2ImgConfig, components: SDComponents | None = None, device: str | torch.device | None = None):
        super().__init__(cfg, components, device, frozen=("vae", "text_encoder"))
        self.items = read_training_items(cfg.data)
        self._cache_images()
        self.captions = cache_captions([item.caption for item in self.items], self.components.tokenizer,
                                       self.components.text_encoder, self.device, copies=2 if cfg.data.flip else 1,
                                       encoder_trains=self.text_encoder_trains())
        self.setup_trainable()

    def setup_trainable(self) -> None:
        """Turn gradients on where this task trains: the whole UNet, and the text encoder when asked."""
        self.components.unet.requires_grad_(True).train()
        if self.text_encoder_trains():
            self.components.text_encoder.requires_grad_(True).train()

    def text_encoder_trains(self) -> bool:
        """Whether gradients reach the text encoder (then captions are encoded every step instead of cached)."""
        return getattr(self.cfg, "train_text_encoder", False)

    def _cache_images(self) -> None:
        """Encode every image (and its flip) once."""
        data = self.cfg.data
        if data.crop == "random":
            raise UserError("data.crop=random cannot be used with cached latents; use center or resize")
        images = load_images([item.path for item in self.items], data.resolution, data.crop, data.flip)
        self.latents = encode_latents(self.components.vae, images)
        logger.info("cached %d latents %s", len(self.latents), tuple(self.latents.mean.shape[1:]))

    def batch_latents(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Latents of the batch's examples: one draw from their cached VAE posteriors."""
        return self.latents[batch].sample(generator)

    # --- the loop's interface -------------------------------------------------------------------------------------
    def num_examples(self) -> int:
        return len(self.captions.index)

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator, step: int) -> torch.Tensor:
        latents = self.batch_latents(batch, generator)
        text_index = self.captions.index[batch]
        if self.cfg.data.caption_dropout:
            drop = torch.rand(len(batch), generator=generator, device=self.device) < self.cfg.data.caption_dropout
            text_index = torch.where(drop, torch.full_like(text_index, self.captions.empty), text_index)
        text = self.captions.text(text_index, self.components.text_encoder)
        return denoising_loss(self.components.unet, self.components.scheduler, latents, text, generator, self.cfg.loss)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        parts = {"unet": self.components.unet, "text_encoder": self.components.text_encoder}
        return {f"{part}.{name}": p for part, model in parts.items() for name, p in model.named_parameters() if p.requires_grad}

    def save_outputs(self, folder: Path) -> None:
        self.components.save(folder)

    def sample(self, folder: Path, step: int) -> None:
        from atelier.diffusion.text2img import generate
        from atelier.utils.images import make_grid

        self.components.unet.eval()
        self.components.text_encoder.eval()
        out = generate(self.components, self.cfg.sample.prompts, size_hw=self.cfg.data.resolution, steps=self.cfg.sample.steps,
                       guidance_scale=self.cfg.sample.guidance_scale, seed=0, show_progress=False)
        self.components.unet.train()
        if self.text_encoder_trains():
            self.components.text_encoder.train()
        save_image(make_grid([out.images]), folder / f"step-{step:07d}.png")
