"""The base model the demo's stages start from: the embedded FashionSynth base (checked, not trained here), or with
--from-scratch the tiny base this module trains (VAE, then text-to-image UNet and text encoder) in about 8 minutes.

The tiny VAE learns from its own FashionSynth draw, photos and illustrations of 256 other people than the demo data's
(so every held-out identity stays unseen by every model) in 2 poses each: a codec generalises with the number of
people it has seen (adding 96 identities to the demo's 38 training ones gave +0.6 dB PSNR on held-out identities).
"""

from __future__ import annotations

from pathlib import Path

from atelier.config import ModelConfig, TrainConfig, to_dict
from atelier.demo.context import DEMO_DATA, FAST_DATA, DemoContext, cached, ensure_data, synthesized
from atelier.diffusion.components import build_tiny_components, embedded_base_dir
from atelier.training.losses import DiffusionLossConfig
from atelier.training.tasks.autoencoder import (
    AutoencoderConfig,
    AutoencoderInitConfig,
    AutoencoderLossConfig,
    AutoencoderTask,
    ImageFolderConfig,
)
from atelier.training.tasks.text2img import CaptionedDataConfig, SampleConfig, Text2ImgConfig, Text2ImgTask

VAE_DATA = {**DEMO_DATA, "identities": 256, "poses_per_identity": 2, "seed": 1}  # the tiny VAE's own draw: other people


def ensure_vae_data(ctx: DemoContext) -> Path:
    """The VAE's FashionSynth draw (cached under OUT/vae-data); all of it is training data."""
    return synthesized(ctx, "vae-data", VAE_DATA, {**FAST_DATA, "identities": 4})


def base_configs(ctx: DemoContext, data: Path, vae_data: Path) -> tuple[AutoencoderConfig, Text2ImgConfig]:
    """The two training configs of the tiny base (VAE on its own photos + illustrations, then UNet on photo captions).

    The VAE's recipe, measured on held-out identities: many small steps (batch 4) beat few large ones in equal time
    (+3 dB PSNR), MSE is what PSNR scores, and it starts from identity blocks with a near-deterministic posterior.
    """
    style = data / "style"
    vae = AutoencoderConfig(
        model=ModelConfig(base="tiny"),
        data=ImageFolderConfig(roots=[str(vae_data / "style" / "photo"), str(vae_data / "style" / "illustration")],
                               resolution=ctx.resolution),
        train=TrainConfig(max_steps=ctx.pick(2000, 2), batch_size=ctx.pick(4, 2), lr=2e-3, lr_schedule="cosine",
                          warmup_steps=50, weight_decay=0.0, checkpoint_every=500, log_every=20),
        loss=AutoencoderLossConfig(reconstruction="mse"),
        init=AutoencoderInitConfig(zero_residuals=True, posterior_logvar=-8.0),
    )
    unet = Text2ImgConfig(
        data=CaptionedDataConfig(root=str(style / "photo"), list_file=str(style / "train.lst"), resolution=ctx.resolution, flip=True),
        train=TrainConfig(max_steps=ctx.pick(700, 2), batch_size=ctx.pick(16, 2), lr=1e-3, lr_schedule="cosine",
                          warmup_steps=20, weight_decay=0.0, checkpoint_every=200, log_every=5),
        loss=DiffusionLossConfig(),
        sample=SampleConfig(prompts=[], steps=20, guidance_scale=3.0),
        train_text_encoder=True,  # the tiny text encoder starts random: captions only steer colour once it trains
    )
    return vae, unet


def ensure_base(ctx: DemoContext, with_data: bool = True) -> Path:
    """The base model every stage starts from (a diffusers directory): the embedded FashionSynth base, its files checked
    against their sha256; with --from-scratch the tiny base trained here, cached under OUT/base. with_data: also make
    the demo's FashionSynth draw (OUT/data), which every stage but tryon and design trains and scores on."""
    if with_data or ctx.from_scratch:
        data = ensure_data(ctx)
    if not ctx.from_scratch:
        from atelier.diffusion.release import verify_release

        verify_release(embedded_base_dir())
        return embedded_base_dir()
    vae_cfg, unet_cfg = base_configs(ctx, data, ensure_vae_data(ctx))

    def build(folder: Path) -> None:
        vae_task = lambda: AutoencoderTask(vae_cfg, components=build_tiny_components(seed=0))  # noqa: E731
        ctx.train("train VAE", vae_task, vae_cfg, folder / "vae")
        unet_cfg.model.base = str(folder / "vae" / "final")
        ctx.train("train UNet", lambda: Text2ImgTask(unet_cfg), unet_cfg, folder / "unet")

    key = {"vae": to_dict(vae_cfg), "unet": to_dict(unet_cfg), "data": str(data), "vae_data": VAE_DATA}
    cached(ctx.out / "base", key, build)
    return ctx.out / "base" / "unet" / "final"


def base_config(ctx: DemoContext) -> dict:
    """The settings behind the base (for the report): the embedded base's recipe, or the two scratch configs."""
    if not ctx.from_scratch:
        import yaml

        return yaml.safe_load((embedded_base_dir() / "config.yaml").read_text())
    vae_cfg, unet_cfg = base_configs(ctx, ctx.data, ctx.out / "vae-data")
    return {"vae": vae_cfg, "unet": unet_cfg}
