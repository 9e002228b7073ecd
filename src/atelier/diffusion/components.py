"""Stable Diffusion 1.x components (unet, vae, text encoder, tokenizer, scheduler): load, build tiny, save.

Sources: a diffusers-format directory, a single `.safetensors` checkpoint (diffusers' single-file loading), a hub id
when online, `tiny`/`small` (configurations built here with random weights and an offline tokenizer: tests, training
from scratch), or `fashionsynth`, the trained base embedded in the package (checked against its sha256 manifest).
A tiny model saved with `SDComponents.save` is an ordinary diffusers directory and reloads through the same loader.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atelier.errors import UserError

logger = logging.getLogger(__name__)

SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

# The SD 1.x noise schedule; the tiny model uses the same one so everything downstream is exercised as at full size.
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "steps_offset": 1,
}


def vae_scale(vae) -> int:
    """Pixels per latent cell of a diffusers VAE: it halves the resolution between each pair of its blocks."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


@dataclass
class SDComponents:
    """The five parts of a Stable Diffusion 1.x model."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any

    @property
    def latent_scale(self) -> int:
        """Pixels per latent cell (8 for SD 1.5, 4 for tiny)."""
        return vae_scale(self.vae)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "SDComponents":
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(device=device, dtype=dtype) if dtype is not None else module.to(device)
        return self

    def save(self, folder: str | Path) -> Path:
        """Write a diffusers-format directory (model_index.json + one subfolder per component)."""
        from atelier.utils.io import write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(folder / "unet")
        self.vae.save_pretrained(folder / "vae")
        self.text_encoder.save_pretrained(folder / "text_encoder")
        self.tokenizer.save_pretrained(folder / "tokenizer")
        self.scheduler.save_pretrained(folder / "scheduler")
        write_json(
            folder / "model_index.json",
            {
                "_class_name": "StableDiffusionPipeline",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "scheduler": ["diffusers", type(self.scheduler).__name__],
                "safety_checker": [None, None],
                "feature_extractor": [None, None],
                "requires_safety_checker": False,
            },
        )
        return folder


# Random-weight architectures built here (offline tokenizer, SD 1.x layout, VAE factor 4). `tiny`: tests and the demo's
# --from-scratch base. `small`: the FashionSynth base (its trained weights ship as `fashionsynth`), sized to draw a
# garment's pattern at 96x64 px while training in hours on 2 CPU cores (8.6M-parameter UNet, 1.0M-parameter VAE).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "tiny": {"unet": (32, 32, 64), "vae": (16, 32, 32), "text_layers": 2, "sample_size": 16},
    "small": {"unet": (96, 96, 192), "vae": (32, 64, 64), "text_layers": 2, "sample_size": 24},
}


def build_tiny_components(seed: int = 0, cross_attention_dim: int = 64, architecture: str = "tiny") -> SDComponents:
    """A small SD-1.x-shaped model with random weights (`architecture`: a key of ARCHITECTURES; tiny: UNet ~1M params,
    VAE factor 4, 2-layer CLIP text model)."""
    import tempfile

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from atelier.diffusion.tokenizer import vocab_size, write_tokenizer_files

    sizes = ARCHITECTURES[architecture]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sizes["sample_size"],
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=sizes["unet"],
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=sizes["vae"],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=4 * sizes["sample_size"],
    )
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer_files(folder))
    text_config = CLIPTextConfig(
        vocab_size=vocab_size(),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=cross_attention_dim,
        intermediate_size=2 * cross_attention_dim,
        num_hidden_layers=sizes["text_layers"],
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=cross_attention_dim,
    )
    text_encoder = CLIPTextModel(text_config)
    scheduler = DDPMScheduler(**SD_SCHEDULER_CONFIG)
    return SDComponents(unet, vae, text_encoder, tokenizer, scheduler)


# Stable Diffusion 1.5's architecture (the configs of the published model): for speed and memory measurements at real
# scale with random weights, which cost the same as the real ones
SD15_UNET: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}
SD15_VAE: dict[str, Any] = {
    "sample_size": 512, "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "scaling_factor": 0.18215,
}
SD15_TEXT: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
}


def build_sd15_components(seed: int = 0, text_encoder: bool = True) -> SDComponents:
    """SD 1.5's UNet (860M), VAE and CLIP text model (12 x 768) with random weights and the offline tokenizer.

    Nothing is downloaded. `text_encoder=False` leaves the text encoder and tokenizer out (None), for measurements
    that never encode text.
    """
    import tempfile

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from atelier.diffusion.tokenizer import write_tokenizer_files

    torch.manual_seed(seed)
    encoder = tokenizer = None
    if text_encoder:
        with tempfile.TemporaryDirectory() as folder:
            tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer_files(folder))
        encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT, bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    return SDComponents(UNet2DConditionModel(**SD15_UNET), AutoencoderKL(**SD15_VAE), encoder, tokenizer,
                        DDPMScheduler(**SD_SCHEDULER_CONFIG))

def _offline() -> bool:
    """True when the hub is switched off by the environment or unreachable (a 3 s probe, instead of minutes of retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or os.environ.get("TRANSFORMERS_OFFLINE", "0") not in ("0", ""):
        return True
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return False
    except OSError:
        return True


def _load_directory(folder: Path, revision: str | None = None, **kwargs: Any) -> SDComponents:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    src = str(folder)
    return SDComponents(
        unet=UNet2DConditionModel.from_pretrained(src, subfolder="unet", revision=revision, **kwargs),
        vae=AutoencoderKL.from_pretrained(src, subfolder="vae", revision=revision, **kwargs),
        # float32 like the diffusers parts (transformers would keep a file's fp16); fast paths cast later on purpose
        text_encoder=CLIPTextModel.from_pretrained(src, subfolder="text_encoder", revision=revision, dtype=torch.float32,
                                                   **kwargs),
        tokenizer=CLIPTokenizer.from_pretrained(src, subfolder="tokenizer", revision=revision, **kwargs),
        scheduler=DDPMScheduler.from_pretrained(src, subfolder="scheduler", revision=revision, **kwargs),
    )


def _load_single_file(path: Path, config: str | None = None) -> SDComponents:
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    if path.suffix != ".safetensors":
        raise UserError(
            f"model file {path}: only .safetensors single-file checkpoints are loaded (pickled .ckpt files can run code); "
            "convert it to .safetensors or pass a diffusers directory"
        )
    try:
        kwargs = {"config": str(config), "local_files_only": True} if config else {"local_files_only": _offline()}
        pipe = StableDiffusionPipeline.from_single_file(str(path), safety_checker=None, **kwargs)
    except (OSError, ValueError, KeyError, SingleFileComponentError) as error:
        raise UserError(
            f"model file {path} could not be loaded as a Stable Diffusion 1.x checkpoint ({str(error).splitlines()[0]}). "
            "Single-file loading needs the model's configs: online once, or offline a diffusers directory of the same "
            "architecture as model.config (e.g. a local stable-diffusion-v1-5 copy)"
        ) from None
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    return SDComponents(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, scheduler)


EMBEDDED_BASE = "fashionsynth"  # the trained base shipped in the package (training.recipe made it)


def embedded_base_dir() -> Path:
    """Where the package keeps the embedded FashionSynth base (a released diffusers folder, fp16)."""
    return Path(__file__).resolve().parents[1] / "assets" / EMBEDDED_BASE


def load_embedded_base() -> SDComponents:
    """The embedded FashionSynth base in float32, after checking every file's sha256 against its manifest."""
    from atelier.diffusion.release import verify_release

    folder = embedded_base_dir()
    verify_release(folder)
    return _load_directory(folder)


def load_components(source: str | os.PathLike, revision: str | None = None, config: str | os.PathLike | None = None) -> SDComponents:
    """Load SD 1.x components from `fashionsynth` (the embedded trained base), `tiny` or `small` (random weights), a
    diffusers directory, a .safetensors file, or a hub id (online).

    `config`: for a single file, a diffusers directory whose component configs describe it (needed offline).
    """
    text = str(source)
    if text == EMBEDDED_BASE:
        return load_embedded_base()
    if text in ARCHITECTURES:
        return build_tiny_components(architecture=text)
    path = Path(text).expanduser()
    if path.is_dir():
        missing = [name for name in SUBFOLDERS if not (path / name).is_dir()]
        if missing:
            raise UserError(
                f"model directory {path} lacks the subfolder(s) {', '.join(missing)}; expected a diffusers Stable Diffusion folder "
                f"with {', '.join(SUBFOLDERS)} subfolders (e.g. a local copy of stable-diffusion-v1-5)"
            )
        return _load_directory(path, revision)
    if path.is_file():
        return _load_single_file(path, config)
    if path.suffix in (".safetensors", ".ckpt") or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise UserError(f"model {text} not found: expected a diffusers directory, a .safetensors file, `tiny`, or a hub id like owner/name")
    return _load_hub(text, revision)


def _load_hub(repo_id: str, revision: str | None) -> SDComponents:
    try:
        return _load_directory(Path(repo_id), revision, local_files_only=_offline())
    except (OSError, ValueError) as error:
        raise UserError(
            f"model '{repo_id}' is not a local folder and could not be fetched from the hub "
            f"({str(error).splitlines()[0][:160]}). Offline, download it elsewhere (e.g. `huggingface-cli download {repo_id}`) "
            "and pass the local directory: --model /path/to/stable-diffusion-v1-5"
        ) from None


def freeze(*modules: torch.nn.Module) -> None:
    """Turn off gradients and put modules in eval mode (frozen parts of a fine-tune)."""
    for module in modules:
        module.requires_grad_(False)
        module.eval()
