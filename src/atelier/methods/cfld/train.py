"""Task `pose`: train CFLD (Lu et al., CVPR 2024) on pose-transfer pairs (DeepFashion, Market-1501, FashionSynth).

The paper's recipe is the default: every step trains both the source's self-reconstruction (the source image from its
own pose) and the transfer (the target image from the target's pose), each conditioned on the source's appearance;
20% of those examples see the learnable null prompt instead of the decoder's context; timesteps are drawn cubically,
t = (1 - u^3) T; Adam at 1e-4 with a 1000-step warm-up and a x0.1 step decay at epoch 50 of 100, total batch 224 pairs
(so 448 denoising examples), mixed precision and gradient checkpointing. The VAE is frozen; the Swin backbone,
decoder, hybrid attention, pose adapter, null prompt and the UNet parameters named by `cfld.unet_trainable` train.
The appearance image is flipped horizontally at random (CFLD's RandomHorizontalFlip), with the step's generator.

Images are read per batch (the VAE encodes them under no_grad); `data.cache` encodes every image of the split once and
keeps the latents, appearance images and pose maps in memory (small datasets: FashionSynth, tests). Output:
RUN/final/ is atelier's CFLD folder (`atelier pose-transfer --checkpoint RUN`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from atelier.config import ModelConfig, TrainConfig
from atelier.data.pairs import PosePairs, load_pairs
from atelier.diffusion.components import SDComponents
from atelier.diffusion.sampling import SchedulerName
from atelier.errors import UserError
from atelier.methods.cfld.model import PoseModel, PoseModelConfig, build_cfld, check_sizes, save_pose_model
from atelier.methods.cfld.network import CFLDConfig
from atelier.training.base import TaskBase
from atelier.training.cache import Latents, encode_latents
from atelier.training.losses import DiffusionLossConfig, denoising_loss
from atelier.utils.progress import progress

logger = logging.getLogger(__name__)
STEPS_PER_EPOCH = 101_966 // 224  # DeepFashion: 101,966 training pairs in steps of 224 = 455 steps per epoch


@dataclass
class PoseDataConfig:
    """A pose-transfer folder and the sizes (height, width) CFLD works at (defaults: the paper's 256x176 setting)."""

    root: str = ""  # DeepFashion / Market-1501 folder (FashionSynth's deepfashion/ works as is)
    layout: Literal["auto", "deepfashion", "market"] = "auto"
    image_size: tuple[int, int] = (512, 512)
    appearance_size: tuple[int, int] = (256, 256)
    pose_size: tuple[int, int] = (256, 256)
    flip_appearance: bool = True
    cache: bool = False
    max_pairs: int | None = None


@dataclass
class PoseSampleConfig:
    count: int = 4  # the first training pairs: source / target pose / sample / target, every train.sample_every steps
    steps: int = 50
    scheduler: SchedulerName = "ddpm"
    pose_scale: float = 2.0
    full_scale: float = 2.0


def paper_train_config() -> TrainConfig:
    """CFLD's optimisation: Adam 1e-4, 1000 warm-up steps, x0.1 at epoch 50 of 100, batch 224, mixed precision."""
    return TrainConfig(epochs=100, batch_size=224, lr=1e-4, optimizer="adam", weight_decay=0.0, warmup_steps=1000,
                       lr_schedule="step", lr_step_every=50 * STEPS_PER_EPOCH - 1000, lr_step_gamma=0.1,
                       max_grad_norm=None, mixed_precision="bf16", gradient_checkpointing=True, checkpoint_every=2000,
                       sample_every=2000)


@dataclass
class PoseConfig:
    task: Literal["pose"] = "pose"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(base="stable-diffusion-v1-5/stable-diffusion-v1-5"))
    cfld: CFLDConfig = field(default_factory=CFLDConfig)
    data: PoseDataConfig = field(default_factory=PoseDataConfig)
    null_prompt_dropout: float = 0.2
    train: TrainConfig = field(default_factory=paper_train_config)
    loss: DiffusionLossConfig = field(default_factory=lambda: DiffusionLossConfig(timestep_sampling="cubic"))
    sample: PoseSampleConfig = field(default_factory=PoseSampleConfig)

    def model_config(self) -> PoseModelConfig:
        """The part of the config that describes the trained model (saved as cfld.yaml beside the weights)."""
        return PoseModelConfig(self.cfld, self.data.image_size, self.data.appearance_size, self.data.pose_size)


@dataclass
class ImageRows:
    """Per-image tensors of a batch: VAE posterior (scaled), appearance image, pose map."""

    latents: Latents
    appearance: torch.Tensor
    pose: torch.Tensor

    def __getitem__(self, rows: torch.Tensor) -> "ImageRows":
        return ImageRows(self.latents[rows], self.appearance[rows], self.pose[rows])


class PoseTask(TaskBase):
    """CFLD on pairs: self-reconstruction and transfer in one batch, denoising loss through the shared loop."""

    def __init__(self, cfg: PoseConfig, components: SDComponents | None = None, device: str | torch.device | None = None):
        if not cfg.data.root:
            raise UserError("data.root is empty: set it to a DeepFashion or Market-1501 folder (e.g. FashionSynth's deepfashion/)")
        if not 0.0 <= cfg.null_prompt_dropout < 1.0:
            raise UserError(f"null_prompt_dropout {cfg.null_prompt_dropout}: expected a share in [0, 1)")
        super().__init__(cfg, components, device, frozen=("vae",), on_device=("vae",))  # the UNet becomes CFLD's
        split = load_pairs(cfg.data.root, "train", cfg.data.layout)
        model_config = cfg.model_config()
        model_config.frame = split.frame_hw
        torch.manual_seed(cfg.train.seed)  # the new parts' initial weights are a function of the seed
        components = self.components
        self.model = PoseModel(build_cfld(model_config, components.unet), components.vae, components.scheduler, model_config)
        self.latent_hw = check_sizes(model_config, self.model.latent_scale)
        self.cfld = self.model.cfld.to(self.device).train()
        data = cfg.data
        self.pairs = PosePairs(split, data.image_size, data.appearance_size, data.pose_size, data.max_pairs)
        self.cache = self._rows(self.pairs.names()) if data.cache else None
        self.cache_index = {name: row for row, name in enumerate(self.pairs.names())}
        logger.info("pose: %d pairs, %d trainable parameters", len(self.pairs), sum(p.numel() for p in self.trainable_parameters()))

    def _rows(self, names: list[str], batch_size: int = 32) -> ImageRows:
        """Encode images (VAE posterior at the generated size), appearance images and pose maps of `names`."""
        parts = []
        for start in progress(range(0, len(names), batch_size), desc="encode pairs", enabled=len(names) > batch_size):
            chunk = names[start : start + batch_size]
            images = torch.stack([self.pairs.image(name, self.pairs.image_hw) for name in chunk])
            latents = encode_latents(self.model.vae, images.to(self.device))
            appearance = torch.stack([self.pairs.image(name, self.pairs.appearance_hw) for name in chunk])
            pose = torch.stack([self.pairs.pose_map(name) for name in chunk])
            parts.append(ImageRows(latents, appearance.to(self.device), pose.to(self.device)))
        return ImageRows(Latents.cat([part.latents for part in parts]), torch.cat([part.appearance for part in parts]),
                         torch.cat([part.pose for part in parts]))

    # --- the loop's interface -------------------------------------------------------------------------------------
    def num_examples(self) -> int:
        return len(self.pairs)

    def collate(self, indices: list[int]) -> tuple[ImageRows, ImageRows]:
        """(source rows, target rows) of the pairs at `indices`."""
        sources = [self.pairs.pairs[i][0] for i in indices]
        targets = [self.pairs.pairs[i][1] for i in indices]
        if self.cache is None:
            return self._rows(sources), self._rows(targets)
        rows = torch.tensor([self.cache_index[name] for name in sources + targets], device=self.device)
        return self.cache[rows[: len(indices)]], self.cache[rows[len(indices) :]]

    def step_modules(self) -> list[torch.nn.Module]:
        return [self.cfld]

    def training_loss(self, batch: tuple[ImageRows, ImageRows], generator: torch.Generator, step: int) -> torch.Tensor:
        source, target = batch
        pairs = len(source.latents)
        # self-reconstruction (source from its own pose) and transfer (target from the target's pose), one batch
        latents = Latents.cat([source.latents, target.latents]).sample(generator)
        appearance = source.appearance
        if self.cfg.data.flip_appearance:
            flip = torch.rand(pairs, generator=generator, device=self.device) < 0.5
            appearance = torch.where(flip.view(-1, 1, 1, 1), appearance.flip(-1), appearance)
        cond = self.cfld.condition(appearance, torch.cat([source.pose, target.pose]), self.latent_hw)
        drop = torch.rand(2 * pairs, generator=generator, device=self.device) < self.cfg.null_prompt_dropout
        context = torch.where(drop.view(-1, 1, 1), self.cfld.null_context(2 * pairs).to(cond.context.dtype), cond.context)
        return denoising_loss(self.cfld, self.model.scheduler, latents, context, generator, self.cfg.loss,
                              pose_features=cond.pose_features, query_bias=cond.query_bias)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p for name, p in self.cfld.named_parameters() if p.requires_grad}

    def save_outputs(self, folder: Path) -> None:
        save_pose_model(self.model, folder)

    def sample(self, folder: Path, step: int) -> None:
        """Grid of the first `sample.count` training pairs: source / target pose / sample / target."""
        from atelier.methods.cfld.sample import transfer
        from atelier.utils.images import make_grid, tensor_to_pil
        from atelier.utils.io import save_image

        items = [self.pairs[i] for i in range(min(self.cfg.sample.count, len(self.pairs)))]
        s = self.cfg.sample
        self.cfld.eval()
        out = transfer(self.model, torch.stack([it.appearance for it in items]), torch.stack([it.target_pose for it in items]),
                       steps=s.steps, scheduler=s.scheduler, pose_scale=s.pose_scale, full_scale=s.full_scale, show_progress=False)
        self.cfld.train()
        rows = [[tensor_to_pil(it.source), tensor_to_pil(it.target_pose[:3] * 2 - 1), image, tensor_to_pil(it.target)]
                for it, image in zip(items, out.images)]
        save_image(make_grid(rows), folder / f"step-{step:07d}.png")
