"""MCLD's model (Liu et al., CVPR 2025) as a unit: its typed config, build, load, save and speed set-up.

atelier's MCLD folder (a training run's `final/`):
    mcld.yaml          MCLDModelConfig
    mcld.safetensors   every tensor of the MCLDNet that is not one of the base UNet's own: the reference UNet, pose
                       guider, face projector and the denoising UNet's `...attn2.processor.to_k_ip/to_v_ip` weights
    unet/              the denoising UNet as a plain diffusers folder (its own keys only)
    vae/ scheduler/    diffusers folders (the scheduler as trained: v-prediction, zero terminal SNR, trailing)
    image_encoder/     the frozen CLIP image encoder (transformers folder + its processor), so the folder stands alone
`unet.save_pretrained` would write the face projections (they are parameters of the attn2 processors, which are
sub-modules) into unet/, where diffusers' loader reports them as unexpected keys; so unet/ is written from the state
dict without them, and they live in mcld.safetensors beside the other new parts. Loading rebuilds the MCLDNet around
the plain UNet (fresh processors) and then loads mcld.safetensors strictly.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from atelier.config import from_dict, read_yaml, save_yaml
from atelier.diffusion.components import vae_scale
from atelier.diffusion.speed import SpeedConfig, apply_speed_to_unet, apply_speed_to_vae, cast
from atelier.errors import UserError
from atelier.methods.mcld.clip_image import CLIPImageEncoder, load_clip_image_encoder, tiny_clip_image_encoder
from atelier.methods.mcld.network import MCLDNet, MCLDNetConfig

MODEL_CONFIG = "mcld.yaml"
WEIGHTS = "mcld.safetensors"
IMAGE_ENCODER = "image_encoder"
TINY = "tiny"


@dataclass
class MCLDModelConfig:
    """Everything needed to rebuild a trained MCLD: its parts, the sizes ((height, width) each), the CLIP encoder."""

    net: MCLDNetConfig = field(default_factory=MCLDNetConfig)
    image_size: tuple[int, int] = (512, 512)  # generated image (and the target's IUV image)
    texture_size: tuple[int, int] = (512, 512)  # the source's SMPL UV texture map fed to the reference UNet
    clip_image: str = ""  # a CLIPVisionModelWithProjection folder (sd-image-variations-diffusers/image_encoder) or "tiny"


@dataclass
class MCLDModel:
    """An MCLD model ready to sample or train: the network (both UNets inside), VAE, scheduler, CLIP image encoder."""

    net: MCLDNet
    vae: Any
    scheduler: Any
    clip: CLIPImageEncoder
    config: MCLDModelConfig

    @property
    def latent_scale(self) -> int:
        return vae_scale(self.vae)


def check_sizes(config: MCLDModelConfig, latent_scale: int) -> tuple[int, int]:
    """The latent grid of the generated image; UserError when a size is not a multiple of the VAE's factor."""
    for what, (height, width) in (("image", config.image_size), ("texture", config.texture_size)):
        if height % latent_scale or width % latent_scale:
            raise UserError(f"{what} size {height}x{width} (HxW) must be a multiple of {latent_scale}, the VAE's downsampling")
    return config.image_size[0] // latent_scale, config.image_size[1] // latent_scale


def build_clip_encoder(spec: str, context_dim: int) -> CLIPImageEncoder:
    """The CLIP image encoder named by `spec` ("tiny": a random one as wide as the UNet's context, seed 0)."""
    if not spec:
        raise UserError("mcld clip_image is empty: set it to a CLIPVisionModelWithProjection folder (e.g. "
                        "sd-image-variations-diffusers/image_encoder), or `tiny` for the tiny base")
    encoder = tiny_clip_image_encoder(projection_dim=context_dim) if spec == TINY else load_clip_image_encoder(spec)
    if encoder.dim != context_dim:
        raise UserError(f"CLIP image encoder {spec}: its embeddings are {encoder.dim} wide but the UNet's context is "
                        f"{context_dim}; MCLD feeds them to the cross-attention as they are (use a matching encoder)")
    return encoder


def build_mcld_model(config: MCLDModelConfig, components, clip: CLIPImageEncoder | None = None) -> MCLDModel:
    """A fresh MCLD on SD components: the denoising UNet is the base's UNet, the reference UNet a copy of it."""
    unet = components.unet
    clip = clip or build_clip_encoder(config.clip_image, unet.config.cross_attention_dim)
    net = MCLDNet(config.net, unet, copy.deepcopy(unet), latent_scale=vae_scale(components.vae))
    model = MCLDModel(net, components.vae, components.scheduler, clip, config)
    check_sizes(config, model.latent_scale)
    return model


def _is_base_unet_key(name: str) -> bool:
    return name.startswith("unet.") and ".processor." not in name


def mcld_state_dict(net: MCLDNet) -> dict[str, torch.Tensor]:
    """What mcld.safetensors holds: every tensor but the base UNet's own (face projections included)."""
    return {name: value.detach().contiguous() for name, value in net.state_dict().items() if not _is_base_unet_key(name)}


def save_mcld_model(model: MCLDModel, folder: str | Path) -> Path:
    """Write atelier's MCLD folder (see the module docstring)."""
    from atelier.utils.io import save_safetensors

    folder = Path(folder)
    save_safetensors(mcld_state_dict(model.net), folder / WEIGHTS)
    unet = model.net.unet
    unet.save_config(folder / "unet")
    own = {name: value.detach().contiguous() for name, value in unet.state_dict().items() if ".processor." not in name}
    save_safetensors(own, folder / "unet" / "diffusion_pytorch_model.safetensors")
    model.vae.save_pretrained(folder / "vae")
    model.scheduler.save_pretrained(folder / "scheduler")
    model.clip.model.save_pretrained(folder / IMAGE_ENCODER)
    model.clip.processor.save_pretrained(folder / IMAGE_ENCODER)
    save_yaml(model.config, folder / MODEL_CONFIG)
    return folder


def checkpoint_folder(checkpoint: str | Path) -> Path:
    """The folder holding an MCLD model: a run (RUN/final) or the folder itself."""
    folder = Path(checkpoint)
    if (folder / "final" / MODEL_CONFIG).is_file():
        folder = folder / "final"
    if not (folder / MODEL_CONFIG).is_file():
        raise UserError(f"--checkpoint {checkpoint}: expected an MCLD training run (RUN/ or RUN/final/ with {MODEL_CONFIG})")
    return folder


def read_model_config(checkpoint: str | Path) -> MCLDModelConfig:
    """The MCLDModelConfig of a run, without loading the model (sizes can be checked before the load)."""
    return from_dict(MCLDModelConfig, read_yaml(checkpoint_folder(checkpoint) / MODEL_CONFIG), where=MODEL_CONFIG)


def _load_folder(folder: Path) -> MCLDModel:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from atelier.weights import load_state_dict

    config = from_dict(MCLDModelConfig, read_yaml(folder / MODEL_CONFIG), where=MODEL_CONFIG)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    net = MCLDNet(config.net, unet, copy.deepcopy(unet), latent_scale=vae_scale(vae))
    state = load_state_dict(folder / WEIGHTS)
    expected = mcld_state_dict(net)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise UserError(f"{folder / WEIGHTS}: {first} is {'missing' if missing else 'not a tensor of this MCLD'} "
                        f"({len(missing)} missing, {len(unexpected)} unexpected); the file does not fit {MODEL_CONFIG}")
    wrong = [name for name in expected if state[name].shape != expected[name].shape]
    if wrong:
        raise UserError(f"{folder / WEIGHTS}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, this MCLD's is "
                        f"{tuple(expected[wrong[0]].shape)}")
    net.load_state_dict(state, strict=False)  # exactly the non-base keys, checked above
    clip = load_clip_image_encoder(folder / IMAGE_ENCODER)
    return MCLDModel(net, vae, DDPMScheduler.from_pretrained(folder / "scheduler"), clip, config)


def load_mcld_model(checkpoint: str | Path, device: str | torch.device | None = None,
                    speed: SpeedConfig | None = None) -> MCLDModel:
    """atelier's MCLD folder (run or run/final), in eval mode on `device`, made fast by `speed`."""
    from atelier.diffusion.components import freeze

    model = _load_folder(checkpoint_folder(checkpoint))
    freeze(model.net, model.vae)
    model.net.eval()
    return apply_speed_to_mcld_model(model, speed or SpeedConfig(), device or ("cuda" if torch.cuda.is_available() else "cpu"))


def apply_speed_to_mcld_model(model: MCLDModel, speed: SpeedConfig, device: str | torch.device | None = None) -> MCLDModel:
    """Apply `speed` in place: both UNets (MCLD's own attn1/attn2 processors are kept: diffusion.speed.set_attention
    leaves processors it does not know alone), the VAE and the CLIP encoder. No compilation: the pose guider enters
    through a forward hook and the processors read tensors set per call, which a compiled graph would freeze."""
    device = torch.device(device) if device is not None else next(model.net.parameters()).device
    speed = dataclasses.replace(speed, compile=False)
    dtype = speed.torch_dtype(device)
    model.net.to(device)
    for part in (model.net.pose_guider, model.net.face_projector):
        cast(part, dtype)
    apply_speed_to_unet(model.net.unet, speed, device)
    apply_speed_to_unet(model.net.reference_unet, speed, device)
    apply_speed_to_vae(model.vae, speed, device)
    model.clip.model.to(device)
    return model
