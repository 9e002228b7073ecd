"""Uni-DlLoRA (Liao et al. 2024) inference: img2img with Uni-adapter residuals and the illustration LoRA.

The paper's sampling: SD 1.5 img2img at 512 px, DDPM 50 steps, strength 0.7 (so 35 run), guidance 5, empty
prompt; the Uni-adapter's features are computed once from the photo and its sketch and added to the down-block
residuals at every step, on both halves of the guidance batch (as diffusers' adapter pipelines and the released
pipeline do); only the illustration LoRA is active. With equal prompt and negative prompt (the paper's empty
prompt) both halves are the same computation, so guidance cannot change the result: the UNet then runs once per
step instead of twice (identical up to float rounding). Everything after the adapter features is the style
pipeline's SDEdit translation (`atelier.diffusion.img2img.translate`) run on the UNet with the residuals bound.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
from PIL import Image

from atelier.diffusion.img2img import translate
from atelier.diffusion.sampling import SchedulerName, Seeds, check_range
from atelier.errors import UserError
from atelier.methods.unidllora.model import Illustrator, all_domains
from atelier.methods.unidllora.uni_adapter import BRANCHES, ResidualUNet, branch_weights

logger = logging.getLogger(__name__)

PAPER = {"strength": 0.7, "steps": 50, "guidance_scale": 5.0, "prompt": "", "scheduler": "ddpm", "size": 512}


@dataclass
class IllustrateOutput:
    images: list[Image.Image]
    latents: torch.Tensor
    sketches: torch.Tensor  # (B, 1, H, W) in [0, 1]: what the sketch adapter saw


@torch.no_grad()
def illustrate(model: Illustrator, images: torch.Tensor, *, prompt: str = "", negative_prompt: str = "",
               strength: float = 0.7, steps: int = 50, guidance_scale: float = 5.0, adapter_scale: float = 1.0,
               adapter_weights: list[float] | None = None, lora_weights: dict[str, float] | None = None, seed: Seeds = 0,
               scheduler: SchedulerName = "ddpm", show_progress: bool = True) -> IllustrateOutput:
    """Translate (B, 3, H, W) photos in [-1, 1]: validate -> LoRA weights -> adapter features -> SDEdit with residuals.

    `seed`: an int S seeds photo i with S + i, a sequence gives each photo's seed (as `style.translate`).
    """
    from atelier.methods.unidllora.dual_lora import set_domain_weights

    # 1. validate: the adapter's scale and weights (the size is checked by the adapter and the translation)
    weights = branch_weights(adapter_scale, adapter_weights)  # refuses negatives; NaN and inf pass its comparisons
    check_range({"--adapter-scale": adapter_scale})
    check_range({f"--adapter-weights {branch}": share for branch, share in zip(BRANCHES, adapter_weights or [])})
    unet = model.components.unet
    # 2. LoRA domain weights (None keeps what the model was loaded with; a fused LoRA cannot change them)
    if lora_weights is not None and model.fused_lora_weights is not None:
        if all_domains(lora_weights) != model.fused_lora_weights:
            raise UserError(f"lora_weights {all_domains(lora_weights)}: this model's LoRA was fused in at load with "
                            f"{model.fused_lora_weights}; pass the weights when loading (--lora-weights), or load with "
                            "SpeedConfig(fuse_lora=False) to switch them per call")
    elif lora_weights is not None:
        set_domain_weights(unet, lora_weights)
    # 3. encode: the photo and its sketch through the Uni-adapter, once for all steps
    rgb, sketches = model.uni_adapter.inputs(images)
    dtype = next(unet.parameters()).dtype
    features = [feature.to(dtype) for feature in model.uni_adapter.features(rgb, sketches, weights)]
    # 4-7. timesteps -> latents -> denoise (residuals bound to the UNet) -> decode: the SDEdit translation
    bound = dataclasses.replace(model.components, unet=ResidualUNet(unet, features))
    guidance = 1.0 if prompt == negative_prompt else guidance_scale  # both halves identical: guidance is a no-op
    out = translate(bound, images, [prompt] * len(images), strength=strength, steps=steps, guidance_scale=guidance,
                    negative_prompt=negative_prompt, seed=seed, scheduler=scheduler, show_progress=show_progress)
    return IllustrateOutput(out.images, out.latents, sketches.float().cpu())
