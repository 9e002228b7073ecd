"""Tasks `tryon` and `garment-design`: train the StableVITON-style network on a VITON-HD folder (FashionSynth's
`atelier synth --tryon` output works as is).

Each training pair is a person with their own garment (VITON-HD's train_pairs.txt): the person's latent is noised and
denoised from the 13-channel input (noisy latent, masked person, mask, DensePose) with the garment encoder reading
the control image: the garment photo (`tryon`) or MGD's garment sketch (`garment-design`). The text context is the
empty prompt for try-on and the garment's caption for design, replaced by the empty prompt for `caption_dropout`
(20%) of the examples. Defaults follow StableVITON / UniFashion: AdamW at 1e-4, 512x384 (H x W), mixed precision and
gradient checkpointing; the base is an SD-1.5 inpainting folder (a text-to-image base works too: its 4 input channels
go to the noisy latent, the 9 others start at zero). The VAE and text encoder are frozen; the UNet (parameters matching
`net.unet_trainable`), the garment encoder and the zero cross-attention train.

`data.cache` encodes every pair once (VAE posteriors, conditions, captions) and keeps them in memory (FashionSynth,
tests). Output: RUN/final/ is atelier's try-on folder (`atelier try-on` / `atelier design --checkpoint RUN`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from atelier.config import ModelConfig, TrainConfig
from atelier.diffusion.components import SDComponents
from atelier.diffusion.sampling import SchedulerName
from atelier.errors import UserError
from atelier.methods.tryon.data import TryOnExamples, stack
from atelier.methods.tryon.model import TryOnModelConfig, build_model, latent_grid, save_tryon_model
from atelier.methods.tryon.network import TryOnNetConfig
from atelier.methods.tryon.sample import Conditions, encode_conditions
from atelier.training.base import TaskBase
from atelier.training.cache import Latents, cache_captions, encode_latents
from atelier.training.losses import DiffusionLossConfig, denoising_loss
from atelier.utils.progress import progress

logger = logging.getLogger(__name__)
MODES = {"tryon": "tryon", "garment-design": "design"}
# what starts new: the zero cross-attention, the noisy-input encoder's hint convolution, and the UNet's input
# convolution (widened: 9 of its 13 inputs are new)
NEW_PARTS = ("cross_attention.", "garment_encoder.hint_in.", "unet.conv_in.")


@dataclass
class TryOnDataConfig:
    root: str = ""  # a VITON-HD folder (train_pairs.txt, train/); FashionSynth's --tryon output works as is
    image_size: tuple[int, int] = (512, 384)  # (H, W), StableVITON's
    cache: bool = False
    max_pairs: int | None = None


@dataclass
class TryOnSampleConfig:
    count: int = 4  # the first training pairs: masked person / control / sample / person, every train.sample_every steps
    steps: int = 20
    scheduler: SchedulerName = "ddim"
    guidance_scale: float = 1.0
    garment_guidance: float = 1.0


def paper_train_config() -> TrainConfig:
    """StableVITON's optimisation: AdamW at 1e-4, batch 32, mixed precision, gradient checkpointing."""
    return TrainConfig(max_steps=20_000, batch_size=32, lr=1e-4, optimizer="adamw", weight_decay=0.0, mixed_precision="bf16",
                       gradient_checkpointing=True, checkpoint_every=2000, sample_every=2000)


@dataclass
class TryOnConfig:
    task: Literal["tryon", "garment-design"] = "tryon"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(base="stable-diffusion-v1-5/stable-diffusion-inpainting"))
    net: TryOnNetConfig = field(default_factory=TryOnNetConfig)
    data: TryOnDataConfig = field(default_factory=TryOnDataConfig)
    caption_dropout: float = 0.2
    garment_dropout: float = 0.0  # share of examples trained without the garment (StableVITON: 0); > 0 makes the
    # garment guidance of sampling (--garment-guidance) contrast the network with and without the garment it learned
    new_parts_lr_scale: float = 1.0  # learning rate of NEW_PARTS (zero cross-attention, hint and input convs), x train.lr
    mask_loss_weight: float = 1.0  # loss weight of the latent cells inside the mask (outside: 1; StableVITON: 1)
    train: TrainConfig = field(default_factory=paper_train_config)
    loss: DiffusionLossConfig = field(default_factory=DiffusionLossConfig)
    sample: TryOnSampleConfig = field(default_factory=TryOnSampleConfig)

    @property
    def mode(self) -> str:
        return MODES[self.task]

    def model_config(self) -> TryOnModelConfig:
        return TryOnModelConfig(self.net, self.mode, tuple(self.data.image_size))


@dataclass
class Rows:
    """Per-pair tensors: the person's VAE posterior, the conditions, the caption rows."""

    latents: Latents
    cond: Conditions
    captions: torch.Tensor

    def __getitem__(self, rows: torch.Tensor) -> "Rows":
        c = self.cond
        return Rows(self.latents[rows], Conditions(c.agnostic[rows], c.mask[rows], c.densepose[rows], c.control[rows]),
                    self.captions[rows])


class TryOnTask(TaskBase):
    """The try-on network on VITON-HD train pairs, denoising loss through the shared loop."""

    def __init__(self, cfg: TryOnConfig, components: SDComponents | None = None, device: str | torch.device | None = None):
        from atelier.data.formats.vitonhd import load_vitonhd

        if not cfg.data.root:
            raise UserError("data.root is empty: set it to a VITON-HD folder (e.g. the output of `atelier synth --tryon`)")
        for name in ("caption_dropout", "garment_dropout"):
            if not 0.0 <= getattr(cfg, name) < 1.0:
                raise UserError(f"{name} {getattr(cfg, name)}: expected a share in [0, 1)")
        for name in ("new_parts_lr_scale", "mask_loss_weight"):
            if not getattr(cfg, name) > 0:
                raise UserError(f"{name} {getattr(cfg, name)}: expected a number > 0 (1 is StableVITON's)")
        super().__init__(cfg, components, device)  # the UNet becomes the network's
        split = load_vitonhd(cfg.data.root, "train")
        self.examples = TryOnExamples(split, cfg.data.image_size, cfg.mode, "paired", cfg.data.max_pairs)
        torch.manual_seed(cfg.train.seed)  # the new parts' initial weights are a function of the seed
        self.model = build_model(cfg.model_config(), self.components)
        self.latent_hw = latent_grid(cfg.data.image_size, self.model.latent_scale)
        self.net = self.model.net.to(self.device).train()
        captions = [self.examples.caption(i) for i in range(len(self.examples))]
        self.captions = cache_captions(captions, self.components.tokenizer, self.components.text_encoder, self.device)
        self.cache = self._rows(list(range(len(self.examples)))) if cfg.data.cache else None
        logger.info("%s: %d pairs, %d trainable parameters", cfg.task, len(self.examples),
                    sum(p.numel() for p in self.trainable_parameters()))

    def _rows(self, indices: list[int], batch_size: int = 32) -> Rows:
        parts = []
        for start in progress(range(0, len(indices), batch_size), desc="encode pairs", enabled=len(indices) > batch_size):
            chosen = indices[start : start + batch_size]
            batch = {k: v.to(self.device) for k, v in stack([self.examples[i] for i in chosen]).items()}
            cond = encode_conditions(self.model.vae, batch["agnostic"], batch["mask"], batch["densepose"], batch["control"], self.latent_hw)
            parts.append(Rows(encode_latents(self.model.vae, batch["person"]), cond, self.captions.index[chosen]))
        conds = [part.cond for part in parts]
        return Rows(Latents.cat([part.latents for part in parts]),
                    Conditions(*(torch.cat([getattr(c, key) for c in conds]) for key in ("agnostic", "mask", "densepose", "control"))),
                    torch.cat([part.captions for part in parts]))

    # --- the loop's interface -------------------------------------------------------------------------------------
    def num_examples(self) -> int:
        return len(self.examples)

    def collate(self, indices: list[int]) -> Rows:
        if self.cache is None:
            return self._rows(indices)
        return self.cache[torch.tensor(indices, device=self.device)]

    def step_modules(self) -> list[torch.nn.Module]:
        return [self.net]

    def training_loss(self, batch: Rows, generator: torch.Generator, step: int) -> torch.Tensor:
        rows = batch.captions
        if self.cfg.mode == "design":
            drop = torch.rand(len(rows), generator=generator, device=self.device) < self.cfg.caption_dropout
            rows = torch.where(drop, torch.full_like(rows, self.captions.empty), rows)
        context = self.captions.text(rows, self.components.text_encoder)
        net, cond = self.net, batch.cond
        fixed = net.encode_control(cond.control, context) if net.cfg.garment_input == "garment" else None
        keep = None
        if self.cfg.garment_dropout > 0:
            keep = torch.rand(len(rows), generator=generator, device=self.device) >= self.cfg.garment_dropout

        class Denoiser:  # the loss's `unet`: the 13-channel input and the garment features around the network
            def __call__(self, noisy, timesteps, encoder_hidden_states):
                sample = cond.unet_input(noisy)
                garment = fixed if fixed is not None else net.encode_control(cond.control, encoder_hidden_states, timesteps, sample)
                return net(sample, timesteps, encoder_hidden_states, garment, keep)

        weight = None if self.cfg.mask_loss_weight == 1.0 else 1.0 + (self.cfg.mask_loss_weight - 1.0) * cond.mask
        return denoising_loss(Denoiser(), self.model.scheduler, batch.latents.sample(generator), context, generator,
                              self.cfg.loss, weight=weight)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p for name, p in self.net.named_parameters() if p.requires_grad}

    def parameter_groups(self) -> list[dict]:
        """NEW_PARTS (zero cross-attention, the hint and the widened input convolutions) at `new_parts_lr_scale` times
        the rate, the rest at the rate."""
        new = [p for name, p in self.trainable_state_dict().items() if name.startswith(NEW_PARTS)]
        ids = {id(p) for p in new}
        return [{"params": [p for p in self.trainable_parameters() if id(p) not in ids], "lr_scale": 1.0},
                {"params": new, "lr_scale": self.cfg.new_parts_lr_scale}]

    def save_outputs(self, folder: Path) -> None:
        save_tryon_model(self.model, folder)

    def sample(self, folder: Path, step: int) -> None:
        """Grid of the first `sample.count` training pairs: masked person / control image / sample / person."""
        from atelier.methods.tryon.sample import generate
        from atelier.utils.images import make_grid, tensor_to_pil
        from atelier.utils.io import save_image

        items = [self.examples[i] for i in range(min(self.cfg.sample.count, len(self.examples)))]
        batch, s = stack(items), self.cfg.sample
        self.net.eval()
        images = generate(self.model, batch["agnostic"], batch["mask"], batch["densepose"], batch["control"],
                          [item.caption for item in items], steps=s.steps, scheduler=s.scheduler,
                          guidance_scale=s.guidance_scale, garment_guidance=s.garment_guidance, show_progress=False)
        self.net.train()
        rows = [[tensor_to_pil(it.agnostic), tensor_to_pil(it.control), image, tensor_to_pil(it.person)]
                for it, image in zip(items, images)]
        save_image(make_grid(rows), folder / f"step-{step:07d}.png")
