"""An IP-Adapter-style image adapter (Ye et al. 2023): image encoder -> projection tokens -> decoupled cross-attention.

Built from diffusers' own IP-Adapter pieces, so the UNet runs exactly as in a diffusers pipeline that called
`load_ip_adapter`: `ImageProjection` (a linear map of the CLIP image embedding to 4 tokens + LayerNorm) wrapped in
`MultiIPAdapterImageProjection` as `unet.encoder_hid_proj`, and `IPAdapterAttnProcessor2_0` on every cross-attention
(`to_k_ip` / `to_v_ip` read the image tokens; their output is added with `scale`). The UNet is then called with
`added_cond_kwargs={"image_embeds": [embeds]}`.

Files use the published `ip-adapter_sd15` layout: `image_proj.proj.*`, `image_proj.norm.*` and
`ip_adapter.{1,3,5,...}.to_{k,v}_ip.weight` (odd numbers: the cross-attention processors' places among all attention
processors), as `.safetensors` (flat keys) or `.bin` (nested; read only with `torch.load(weights_only=True)`), beside
an `image_encoder/` folder holding a transformers `CLIPVisionModelWithProjection` (as in IP-Adapter's `models/`).
A fresh adapter starts like IP-Adapter's training: `to_k_ip` / `to_v_ip` copy the text `to_k` / `to_v` weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from atelier.errors import UserError

logger = logging.getLogger(__name__)

NUM_TOKENS = 4  # the ip-adapter_sd15 layout: 4 image tokens (diffusers' loader assumes 4 for a `proj.weight` projection)
WEIGHT_NAME = "ip-adapter.safetensors"
IMAGE_ENCODER_FOLDER = "image_encoder"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIPImageProcessor's normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_image_encoder(seed: int = 0, projection_dim: int = 32, image_size: int = 32):
    """A tiny CLIP vision tower with projection (2 layers, 32 wide) with random weights, for tests and the demo."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=image_size, patch_size=8, projection_dim=projection_dim)
    return CLIPVisionModelWithProjection(config).eval()


def clip_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """CLIP preprocessing of (B, 3, H, W) images in [-1, 1]: shortest side to `size` (bicubic), centre crop, normalise."""
    height, width = images.shape[-2:]
    scale = size / min(height, width)
    resized = F.interpolate((images.float() + 1) / 2, size=(max(size, round(height * scale)), max(size, round(width * scale))),
                            mode="bicubic", antialias=True, align_corners=False)
    top, left = (resized.shape[-2] - size) // 2, (resized.shape[-1] - size) // 2
    crop = resized[..., top : top + size, left : left + size].clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=crop.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=crop.device).view(1, 3, 1, 1)
    return (crop - mean) / std


@dataclass
class ImageAdapter:
    """An image encoder plus the adapter layers it feeds inside `unet` (projection and IP attention processors)."""

    image_encoder: torch.nn.Module
    unet: torch.nn.Module

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings (B, 1, D) of images in [-1, 1] (the frozen encoder runs without gradients)."""
        param = next(self.image_encoder.parameters())
        pixels = clip_pixels(images.to(param.device), self.image_encoder.config.image_size).to(param.dtype)
        return self.image_encoder(pixel_values=pixels).image_embeds.unsqueeze(1)

    def set_scale(self, scale: float) -> None:
        """Weight of the image tokens' attention output (0 = image ignored, exactly the UNet without the adapter)."""
        for processor in _ip_processors(self.unet):
            processor.scale = [float(scale)]

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        """The adapter's own parameters under their published ip-adapter_sd15 names."""
        projection = self.unet.encoder_hid_proj.image_projection_layers[0]
        named = {"image_proj.proj.weight": projection.image_embeds.weight, "image_proj.proj.bias": projection.image_embeds.bias,
                 "image_proj.norm.weight": projection.norm.weight, "image_proj.norm.bias": projection.norm.bias}
        for index, processor in enumerate(_ip_processors(self.unet)):
            named[f"ip_adapter.{2 * index + 1}.to_k_ip.weight"] = processor.to_k_ip[0].weight
            named[f"ip_adapter.{2 * index + 1}.to_v_ip.weight"] = processor.to_v_ip[0].weight
        return named

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: param.detach() for name, param in self.parameters().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Copy published-layout tensors into the adapter, failing on missing keys or shapes that do not fit."""
        params = self.parameters()
        missing = sorted(set(params) - set(state))
        if missing:
            raise UserError(f"image adapter {source}: missing {missing[0]} (and {len(missing) - 1} more); "
                            "expected the ip-adapter_sd15 layout for this base model")
        with torch.no_grad():
            for name, param in params.items():
                if state[name].shape != param.shape:
                    raise UserError(f"image adapter {source}: {name} has shape {tuple(state[name].shape)}, this base "
                                    f"model needs {tuple(param.shape)}; use an adapter made for the same base (SD 1.x)")
                param.copy_(state[name])

    def save(self, folder: str | os.PathLike) -> Path:
        """Write FOLDER/ip-adapter.safetensors (published layout) and FOLDER/image_encoder/."""
        from atelier.utils.io import save_safetensors

        folder = Path(folder)
        self.image_encoder.save_pretrained(folder / IMAGE_ENCODER_FOLDER)
        save_safetensors(self.state_dict(), folder / WEIGHT_NAME)
        return folder


def _ip_processors(unet: torch.nn.Module) -> list:
    """The IP-Adapter processors in attention order: SDPA ones, or classic ones where `diffusion.speed` swapped them."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0

    return [p for p in unet.attn_processors.values() if isinstance(p, (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0))]


def _base_linear(module: torch.nn.Module) -> torch.nn.Linear:
    """The plain Linear under a PEFT LoRA wrapper (or the module itself)."""
    return module.get_base_layer() if hasattr(module, "get_base_layer") else module


def attach_image_adapter(unet: torch.nn.Module, image_encoder: torch.nn.Module, scale: float = 1.0) -> ImageAdapter:
    """Give every cross-attention of `unet` an image branch fed by `image_encoder` (IP-Adapter init); return the adapter."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import ImageProjection, MultiIPAdapterImageProjection

    param = next(unet.parameters())
    processors = {}
    for name, processor in unet.attn_processors.items():
        attention = unet.get_submodule(name.removesuffix(".processor"))
        if not attention.is_cross_attention:
            processors[name] = processor
            continue
        to_k, to_v = _base_linear(attention.to_k), _base_linear(attention.to_v)
        ip = IPAdapterAttnProcessor2_0(hidden_size=to_k.out_features, cross_attention_dim=to_k.in_features,
                                       num_tokens=[NUM_TOKENS], scale=scale)
        with torch.no_grad():
            ip.to_k_ip[0].weight.copy_(to_k.weight)
            ip.to_v_ip[0].weight.copy_(to_v.weight)
        processors[name] = ip.to(param.device, param.dtype)
    unet.set_attn_processor(processors)
    projection = ImageProjection(image_embed_dim=image_encoder.config.projection_dim,
                                 cross_attention_dim=unet.config.cross_attention_dim, num_image_text_embeds=NUM_TOKENS)
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([projection]).to(param.device, param.dtype)
    unet.register_to_config(encoder_hid_dim_type="ip_image_proj")
    return ImageAdapter(image_encoder.to(param.device), unet)


def _weight_file(path: Path) -> Path:
    """The adapter weight file: PATH itself, or the one ip-adapter*.safetensors / ip-adapter*.bin in folder PATH."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"--image-adapter {path} not found; pass a folder with {IMAGE_ENCODER_FOLDER}/ and {WEIGHT_NAME}")
    files = sorted(path.glob("ip-adapter*.safetensors")) or sorted(path.glob("ip-adapter*.bin"))
    if len(files) != 1:
        raise UserError(f"--image-adapter {path}: expected one ip-adapter*.safetensors or ip-adapter*.bin file (e.g. "
                        f"{WEIGHT_NAME} or ip-adapter_sd15.bin); found {len(files)}. Pass the file itself to choose")
    return files[0]


def read_adapter_weights(file: Path) -> dict[str, torch.Tensor]:
    """Flat published-layout tensors from a .safetensors file or a nested .bin (torch.load with weights_only=True);
    a damaged file or a pickle of anything but tensors is one UserError naming it (atelier.weights.load_state_dict)."""
    from atelier.weights import load_state_dict

    if file.suffix not in (".safetensors", ".bin"):
        raise UserError(f"--image-adapter {file}: expected a .safetensors or .bin file")
    nested = load_state_dict(file)
    if file.suffix == ".safetensors":
        return nested
    if not isinstance(nested, dict) or not {"image_proj", "ip_adapter"} <= set(nested):
        raise UserError(f"--image-adapter {file}: expected a dict with 'image_proj' and 'ip_adapter' (ip-adapter_sd15 layout)")
    return {f"{group}.{key}": value for group in ("image_proj", "ip_adapter") for key, value in nested[group].items()}


def load_image_adapter(path: str | os.PathLike, unet: torch.nn.Module, scale: float = 1.0) -> ImageAdapter:
    """Attach an image adapter read from a folder (image_encoder/ + ip-adapter weights) or a weight file to `unet`."""
    from transformers import CLIPVisionModelWithProjection

    file = _weight_file(Path(path).expanduser())
    encoder_dir = file.parent / IMAGE_ENCODER_FOLDER
    if not (encoder_dir / "config.json").is_file():
        raise UserError(f"--image-adapter {path}: no {IMAGE_ENCODER_FOLDER}/ folder with config.json beside {file.name}; "
                        "copy IP-Adapter's models/image_encoder there")
    state = read_adapter_weights(file)
    if "image_proj.proj.weight" not in state:
        raise UserError(f"--image-adapter {file}: no image_proj.proj.weight; only the base ip-adapter_sd15 layout is "
                        "supported (not plus/full-face/face-id variants)")
    image_encoder = CLIPVisionModelWithProjection.from_pretrained(str(encoder_dir)).eval().requires_grad_(False)
    adapter = attach_image_adapter(unet, image_encoder, scale)
    adapter.load_state_dict(state, source=str(file))
    logger.info("loaded image adapter %s (%d tensors)", file, len(state))
    return adapter
