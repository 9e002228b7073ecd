"""Task `style-lora`: a LoRA (Hu et al. 2021) on the UNet's attention learns a style from a captioned folder.

The Diffusion-LoRA-Style-Transfer recipe (docs/style.md): captions prefixed with an identifier
(`data.caption_prefix`, "A Monet painting, "), LoRA r 8 / alpha 16 / dropout 0 on to_q, to_k, to_v, to_out.0,
timesteps drawn in [0, 1000 x `loss.train_strength`). Only the LoRA trains; the base UNet, VAE and text encoder are
frozen. As in Text2ImgTask, VAE latents (of each image and its flip) and caption embeddings are computed once and
cached. Two options need per-step encoding, with the frozen parts still run without gradients:
- `data.crop: random`: images stay in memory and are cropped per step (crop position drawn from the step's
  generator, so resume stays exact), then encoded by the VAE under no_grad;
- `lora.text_encoder: true`: a second LoRA on the text encoder; captions are tokenized once and encoded per step
  (gradients reach only the LoRA weights).
Output: RUN/final/pytorch_lora_weights.safetensors in the diffusers LoRA format (atelier.diffusion.lora).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from atelier.config import ModelConfig, TrainConfig
from atelier.data.transforms import open_rgb, resize_image
from atelier.diffusion.lora import LoraSettings, add_lora, lora_parameters, save_lora
from atelier.training.cache import encode_latents
from atelier.training.losses import DiffusionLossConfig
from atelier.training.tasks.text2img import CaptionedDataConfig, SampleConfig, Text2ImgTask
from atelier.utils.images import pil_to_tensor
from atelier.utils.progress import progress

logger = logging.getLogger(__name__)


@dataclass
class StyleLoraConfig:
    task: Literal["style-lora"] = "style-lora"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: CaptionedDataConfig = field(default_factory=CaptionedDataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: DiffusionLossConfig = field(default_factory=DiffusionLossConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


class StyleLoraTask(Text2ImgTask):
    """Denoising on a captioned style folder where only LoRA weights (UNet, optionally text encoder) train."""

    cfg: StyleLoraConfig

    def setup_trainable(self) -> None:
        lora, unet, text_encoder = self.cfg.lora, self.components.unet, self.components.text_encoder
        unet.requires_grad_(False)
        torch.manual_seed(self.cfg.train.seed)  # the LoRA's initial A matrices are a function of the seed
        add_lora(unet, lora.rank, lora.alpha, lora.dropout, lora.target_modules)
        unet.train()
        if lora.text_encoder:
            add_lora(text_encoder, lora.rank, lora.alpha, lora.dropout, lora.text_encoder_target_modules)
            text_encoder.train()  # only LoRA dropout acts; the CLIP layers have none

    # --- caching, or per-step encoding where an option needs it ------------------------------------------------------
    def _cache_images(self) -> None:
        if self.cfg.data.crop != "random":
            return super()._cache_images()
        self.originals = [open_rgb(item.path) for item in progress(self.items, desc="load images")]
        logger.info("random crops: %d images kept in memory, encoded by the VAE each step", len(self.originals))

    def text_encoder_trains(self) -> bool:
        return self.cfg.lora.text_encoder

    def batch_latents(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.cfg.data.crop != "random":
            return super().batch_latents(batch, generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        crop_generator = torch.Generator().manual_seed(seed)  # PIL crops are drawn on the CPU
        count = len(self.originals)
        crops = []
        for index in batch.tolist():  # indices >= count are the flipped copies (as with cached latents)
            image = pil_to_tensor(resize_image(self.originals[index % count], self.cfg.data.resolution, "random", crop_generator))
            crops.append(image.flip(-1) if index >= count else image)
        return encode_latents(self.components.vae, torch.stack(crops)).sample(generator)

    # --- the loop's interface: only LoRA weights train and are checkpointed ---------------------------------------
    def _models(self) -> dict[str, torch.nn.Module]:
        models = {"unet": self.components.unet}
        if self.cfg.lora.text_encoder:
            models["text_encoder"] = self.components.text_encoder
        return models

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{part}.{name}": param for part, model in self._models().items()
                for name, param in lora_parameters(model).items()}

    def save_outputs(self, folder: Path) -> None:
        save_lora(folder, self.components.unet, self.components.text_encoder if self.cfg.lora.text_encoder else None)
