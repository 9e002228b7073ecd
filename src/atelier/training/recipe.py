"""Task `fashionsynth-base`: the whole embedded base model in one resumable command.

`atelier train configs/fashionsynth-base.yaml --out runs/fashionsynth-base` runs three stages into one run folder:
1. data: a FashionSynth draw (RUN/data; its identities are other people than any demo's, seed differs);
2. vae: the autoencoder task (training.tasks.autoencoder) on the draw's photos and illustrations (RUN/vae);
3. unet: the text-to-image task on the training photos' captions, UNet and text encoder together (RUN/unet),
   starting from the trained VAE;
then writes RUN/release: the model in fp16 safetensors with a MANIFEST.json of sha256 sums, its config and training
logs (what ships as the package's `fashionsynth` base; see diffusion.components.load_components).

Each stage is skipped when its `final` folder exists and resumed from its newest checkpoint otherwise, so an
interrupted run continues where it stopped (`--resume`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from atelier.config import ModelConfig, TrainConfig, to_dict
from atelier.training.losses import DiffusionLossConfig
from atelier.training.tasks.autoencoder import (
    AutoencoderConfig,
    AutoencoderInitConfig,
    AutoencoderLossConfig,
    AutoencoderTask,
    ImageFolderConfig,
)
from atelier.training.tasks.text2img import CaptionedDataConfig, SampleConfig, Text2ImgConfig, Text2ImgTask

logger = logging.getLogger(__name__)


@dataclass
class SynthDrawConfig:
    """The FashionSynth draw the base learns from (atelier synth's settings)."""

    identities: int = 2000
    poses_per_identity: int = 4
    size: tuple[int, int] = (176, 256)  # (W, H) as rendered; the stages resize to `resolution`
    seed: int = 2
    test_fraction: float = 0.05


@dataclass
class VaeStageConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: AutoencoderLossConfig = field(default_factory=lambda: AutoencoderLossConfig(reconstruction="mse"))
    init: AutoencoderInitConfig = field(default_factory=lambda: AutoencoderInitConfig(zero_residuals=True,
                                                                                       posterior_logvar=-8.0))


@dataclass
class UnetStageConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: DiffusionLossConfig = field(default_factory=DiffusionLossConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    caption_dropout: float = 0.1


@dataclass
class BaseRecipeConfig:
    task: Literal["fashionsynth-base"] = "fashionsynth-base"
    architecture: str = "small"  # a key of diffusion.components.ARCHITECTURES (random weights to start from)
    resolution: tuple[int, int] = (96, 64)  # (height, width) of every stage
    data: SynthDrawConfig = field(default_factory=SynthDrawConfig)
    vae: VaeStageConfig = field(default_factory=VaeStageConfig)
    unet: UnetStageConfig = field(default_factory=UnetStageConfig)


def stage_configs(cfg: BaseRecipeConfig, run_dir: Path) -> tuple[AutoencoderConfig, Text2ImgConfig]:
    """The two stages' task configs, as the recipe runs them in `run_dir`."""
    style = run_dir / "data" / "style"
    vae = AutoencoderConfig(
        model=ModelConfig(base=cfg.architecture),
        data=ImageFolderConfig(roots=[str(style / "photo"), str(style / "illustration")], resolution=cfg.resolution),
        train=cfg.vae.train, loss=cfg.vae.loss, init=cfg.vae.init,
    )
    unet = Text2ImgConfig(
        model=ModelConfig(base=str(run_dir / "vae" / "final")),
        data=CaptionedDataConfig(root=str(style / "photo"), list_file=str(style / "train.lst"), resolution=cfg.resolution,
                                 flip=True, caption_dropout=cfg.unet.caption_dropout),
        train=cfg.unet.train, loss=cfg.unet.loss, sample=cfg.unet.sample,
        train_text_encoder=True,  # the text encoder starts random: captions steer the image only once it trains
    )
    return vae, unet


def _run_stage(name: str, make_task, stage_cfg: Any, folder: Path) -> None:
    from atelier.training.loop import train

    if (folder / "final").is_dir():
        logger.info("%s: %s/final exists, skipping the stage", name, folder)
        return
    resume = (folder / "checkpoints").is_dir()
    logger.info("%s: %s in %s", name, "resuming" if resume else "training", folder)
    train(make_task(), stage_cfg.train, folder, resume=resume, config=stage_cfg)


def run_recipe(cfg: BaseRecipeConfig, run_dir: str | Path) -> Path:
    """Run (or resume) every stage in run_dir; return the release folder."""
    from atelier.data.synth import synthesize
    from atelier.diffusion.release import write_release
    from atelier.training.run_dir import claim_run_dir

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    claim_run_dir(run_dir, cfg.task)  # a marked run folder, so that --resume and --overwrite recognise it
    data = run_dir / "data"
    if not (data / "style" / "train.lst").is_file():
        synthesize(data, overwrite=True, **to_dict(cfg.data))
    vae_cfg, unet_cfg = stage_configs(cfg, run_dir)
    _run_stage("vae", lambda: AutoencoderTask(vae_cfg), vae_cfg, run_dir / "vae")
    _run_stage("unet", lambda: Text2ImgTask(unet_cfg), unet_cfg, run_dir / "unet")
    release = run_dir / "release"
    shutil.rmtree(release, ignore_errors=True)
    logs = {f"{stage}-{name}": run_dir / stage / name for stage in ("vae", "unet") for name in ("log.jsonl", "loss.png")}
    write_release(run_dir / "unet" / "final", release, config=to_dict(cfg), logs=logs)
    return release
