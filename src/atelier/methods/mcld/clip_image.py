"""The CLIP image tokens MCLD's cross-attention reads: `CLIPVisionModelWithProjection(...).image_embeds`, one per image.

MCLD (CVPR 2025) starts from sd-image-variations-diffusers, whose `image_encoder/` is a CLIP ViT-L/14 vision tower with
its projection (768-d embeddings, the UNet's context width) and whose `feature_extractor/` is a CLIPImageProcessor.
Images go through transformers' PIL image processor: what `CLIPImageProcessor(use_fast=False)` selects (the fast one
needs torchvision, which has no CPU build here; transformers 5 names the slow class `CLIPImageProcessorPil`). The
encoder is frozen: it is not part of the network MCLD trains, so `MCLDNet` takes its tokens as inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from atelier.errors import UserError


@dataclass
class CLIPImageEncoder:
    """A frozen CLIP vision tower with projection and its image processor: images -> (B, 1, D) image_embeds tokens."""

    model: torch.nn.Module
    processor: object

    @property
    def dim(self) -> int:
        """Width of the tokens (the projection's; SD 1.5's context width, 768, for ViT-L/14)."""
        return int(self.model.config.projection_dim)

    @torch.no_grad()
    def __call__(self, images: list[Image.Image] | torch.Tensor) -> torch.Tensor:
        """PIL images, or a (B, 3, H, W) tensor in [0, 1] -> (B, 1, D): resized, centre-cropped and normalised first."""
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"images of shape {tuple(images.shape)}: expected (B, 3, H, W) in [0, 1]")
            pixels = self.processor(images=images.detach().float().cpu(), return_tensors="pt", do_rescale=False)
        else:
            pixels = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        param = next(self.model.parameters())
        embeds = self.model(pixel_values=pixels["pixel_values"].to(param.device, param.dtype)).image_embeds
        return embeds.unsqueeze(1)


def _processor_folder(folder: Path) -> Path | None:
    for candidate in (folder, folder.parent / "feature_extractor", folder / "feature_extractor"):
        if (candidate / "preprocessor_config.json").is_file():
            return candidate
    return None


def load_clip_image_encoder(folder: str | Path) -> CLIPImageEncoder:
    """A transformers CLIPVisionModelWithProjection folder, or a diffusers model folder holding one as `image_encoder/`
    (sd-image-variations-diffusers); the processor from the nearest preprocessor_config.json (the folder itself, or the
    model's `feature_extractor/`), else CLIP's defaults (224 px, OpenAI mean and std)."""
    from transformers import CLIPImageProcessorPil, CLIPVisionModelWithProjection

    folder = Path(folder)
    if (folder / "image_encoder" / "config.json").is_file():
        folder = folder / "image_encoder"
    if not (folder / "config.json").is_file():
        raise UserError(f"CLIP image encoder {folder}: no config.json there or in image_encoder/; expected a transformers "
                        "CLIPVisionModelWithProjection folder (e.g. sd-image-variations-diffusers/image_encoder)")
    try:
        model = CLIPVisionModelWithProjection.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, RuntimeError) as error:  # missing weights, foreign configs, misshapen tensors
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"CLIP image encoder {folder}: not a loadable CLIPVisionModelWithProjection ({first})") from None
    settings = _processor_folder(folder)
    processor = CLIPImageProcessorPil.from_pretrained(str(settings)) if settings else CLIPImageProcessorPil()
    return CLIPImageEncoder(model.eval().requires_grad_(False), processor)


def tiny_clip_image_encoder(projection_dim: int = 64, seed: int = 0, image_size: int = 32) -> CLIPImageEncoder:
    """A random 2-layer, 32-wide CLIP vision tower at `image_size` px with its processor (tests; built offline)."""
    from transformers import CLIPImageProcessorPil

    from atelier.diffusion.image_adapter import tiny_image_encoder

    model = tiny_image_encoder(seed=seed, projection_dim=projection_dim, image_size=image_size).requires_grad_(False)
    processor = CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return CLIPImageEncoder(model, processor)
