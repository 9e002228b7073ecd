"""XDoG line drawings (Winnemoeller et al. 2012): an extended difference of Gaussians, lines only. Plain torch, no
weights, deterministic; used by the Uni-adapter's sketch branch (methods.unidllora.sketch) and by FashionSynth's
garment sketches (data.synth.tryon), so it lives below both.

The sharpened DoG response on the dark side of an edge is soft-thresholded with tanh (the defaults were chosen by eye
on FashionSynth photos at 48x64 px, where lines come out 1-2 px wide). Output: (B, 1, H, W) in [0, 1], white lines on
black, the convention of T2I-Adapter sketch models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from atelier.errors import UserError

LUMA = (0.299, 0.587, 0.114)


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding (radius 3 sigma)."""
    radius = max(1, int(3 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    padded = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    blurred = F.conv2d(padded, horizontal, groups=channels)
    padded = F.pad(blurred, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(padded, vertical, groups=channels)


@torch.no_grad()
def xdog_sketch(images: torch.Tensor, sigma: float = 0.8, k: float = 1.6, sharpen: float = 20.0, phi: float = 8.0,
                threshold: float = 0.1) -> torch.Tensor:
    """XDoG line drawing (Winnemöller et al. 2012) of (B, 3, H, W) images in [-1, 1]: (B, 1, H, W), lines 1 on 0."""
    if sigma <= 0 or k <= 1:
        raise UserError(f"sketch.sigma {sigma} / sketch.k {k}: expected sigma > 0 and k > 1 (e.g. 0.8 and 1.6)")
    weights = torch.tensor(LUMA, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    gray = (((images.float() + 1) / 2) * weights).sum(1, keepdim=True)
    # the DoG is positive on the dark side of an edge: that side becomes the ink line
    response = sharpen * (_gaussian_blur(gray, k * sigma) - _gaussian_blur(gray, sigma))
    return torch.tanh(phi * (response - threshold).clamp(min=0))
