"""Task `text2img`: train a UNet on a captioned image folder (the embedded default's base model; full fine-tune).

VAE latents and text embeddings are computed once (the VAE and text encoder are frozen) and cached in memory; each
step draws latents from the cached posteriors. Subclasses (style LoRA) change which parameters train.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from atelier.config import ModelConfig, TrainConfig
from atelier.data.transforms import CropMode, load_image_tensor
from atelier.diffusion.components import SDComponents, freeze, load_components
from atelier.diffusion.encode import encode_images, encode_prompts
from atelier.errors import UserError
from atelier.training.losses import DiffusionLossConfig, denoising_loss, sample_latents
from atelier.utils.io import save_image
from atelier.utils.progress import progress

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
    items = read_captioned_folder(data.root, caption_prefix=data.caption_prefix)
    if data.list_file:
        wanted = {Path(line.strip()).stem for line in Path(data.list_file).read_text().splitlines() if line.strip()}
        items = [item for item in items if Path(item.path).stem in wanted]
    if data.max_images:
        items = items[: data.max_images]
    if not items:
        raise UserError(f"data.root {data.root}: no captioned images left to train on (check data.list_file)")
    return items


class Text2ImgTask:
    """Denoising on cached latents of a captioned folder; the whole UNet trains."""

    def __init__(self, cfg: Text2ImgConfig, components: SDComponents | None = None, device: str | torch.device | None = None):
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.components = components or load_components(cfg.model.base, cfg.model.revision)
        self.components.to(self.device)
        freeze(self.components.vae, self.components.text_encoder)
        self.items = read_training_items(cfg.data)
        self._cache()
        self.setup_trainable()

    def setup_trainable(self) -> None:
        self.components.unet.requires_grad_(True).train()
        if self.text_encoder_trains():
            self.components.text_encoder.requires_grad_(True).train()

    def text_encoder_trains(self) -> bool:
        """Whether gradients reach the text encoder (then captions are encoded every step instead of cached)."""
        return getattr(self.cfg, "train_text_encoder", False)

    def _cache(self) -> None:
        """Encode every image (and its flip) and every caption once."""
        self._cache_images()
        self._cache_captions()

    def _cache_images(self) -> None:
        data = self.cfg.data
        if data.crop == "random":
            raise UserError("data.crop=random cannot be used with cached latents; use center or resize")
        images = torch.stack([load_image_tensor(item.path, data.resolution, data.crop)
                              for item in progress(self.items, desc="load images")])
        if data.flip:
            images = torch.cat([images, images.flip(-1)])
        self.latent_mean, self.latent_std = encode_images(self.components.vae, images)
        logger.info("cached %d latents %s", len(self.latent_mean), tuple(self.latent_mean.shape[1:]))

    def _cache_captions(self) -> None:
        """Embed each distinct caption (and the empty one) once; example i uses caption_index[i]."""
        captions = [item.caption for item in self.items]
        self.unique_captions = sorted(set(captions) | {""})
        tokenizer = self.components.tokenizer
        if self.text_encoder_trains():
            self.token_ids = tokenizer(self.unique_captions, padding="max_length", max_length=tokenizer.model_max_length,
                                       truncation=True, return_tensors="pt").input_ids.to(self.device)
        else:
            self.text_embeddings = encode_prompts(tokenizer, self.components.text_encoder, self.unique_captions, self.device)
        self.empty_index = self.unique_captions.index("")
        index = {caption: i for i, caption in enumerate(self.unique_captions)}
        self.caption_index = torch.tensor([index[c] for c in captions] * (2 if self.cfg.data.flip else 1), device=self.device)
        logger.info("cached %d caption embeddings", len(self.unique_captions))

    def batch_latents(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Latents of the batch's examples: one draw from their cached VAE posteriors."""
        return sample_latents(self.latent_mean[batch], self.latent_std[batch], generator)

    def batch_text(self, text_index: torch.Tensor) -> torch.Tensor:
        """Text embeddings of the given caption indices (cached, or encoded now when the text encoder trains)."""
        if self.text_encoder_trains():
            return self.components.text_encoder(self.token_ids[text_index])[0]
        return self.text_embeddings[text_index]

    # --- the loop's interface -------------------------------------------------------------------------------------
    def num_examples(self) -> int:
        return len(self.caption_index)

    def collate(self, indices: list[int]) -> torch.Tensor:
        return torch.tensor(indices, device=self.device)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.trainable_state_dict().values())

    def step_modules(self) -> list[torch.nn.Module]:
        return [self.components.unet]

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        latents = self.batch_latents(batch, generator)
        text_index = self.caption_index[batch]
        if self.cfg.data.caption_dropout:
            drop = torch.rand(len(batch), generator=generator, device=self.device) < self.cfg.data.caption_dropout
            text_index = torch.where(drop, torch.full_like(text_index, self.empty_index), text_index)
        return denoising_loss(self.components.unet, self.components.scheduler, latents, self.batch_text(text_index),
                              generator, self.cfg.loss)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        parts = {"unet": self.components.unet, "text_encoder": self.components.text_encoder}
        return {f"{part}.{name}": p for part, model in parts.items() for name, p in model.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = self.trainable_state_dict()
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

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
