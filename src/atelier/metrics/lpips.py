"""LPIPS v0.1 (Zhang, Isola, Efros, Shechtman & Wang 2018, "The Unreasonable Effectiveness of Deep Features").

distance(x, y) = sum over the five taps l of mean over positions of sum_c w_lc * (f_l(x) - f_l(y))^2, where f_l are
a backbone's channel-normalised ReLU features (unit L2 norm over channels, eps 1e-10) and w_l the learned v0.1
linear layers. Inputs in [0, 1] are mapped to [-1, 1] (lpips' `normalize=True`, what CFLD and LaDI-VTON pass), then
shifted and scaled per channel by lpips' ScalingLayer (shift -0.030, -0.088, -0.188; scale 0.458, 0.448, 0.450).
Backbones: torchvision AlexNet (`alexnet-owt-7be5be79.pth`, the LPIPS everyone reports) or VGG16
(`vgg16-397923af.pth`); linear layers: the v0.1 files torchmetrics ships (`lpips_models/alex.pth`, `vgg.pth`).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import nn

from atelier import weights
from atelier.metrics.nets import randomize
from atelier.metrics.nets.alexnet import TAP_CHANNELS as ALEX_CHANNELS
from atelier.metrics.nets.alexnet import alexnet_features
from atelier.metrics.nets.vgg import TAP_CHANNELS as VGG_CHANNELS
from atelier.metrics.nets.vgg import vgg16_features

logger = logging.getLogger(__name__)

Backbone = Literal["alex", "vgg"]
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between two batches of images in [0, 1]; returns one value per image pair."""

    def __init__(self, backbone: nn.Module, linear: list[torch.Tensor]) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        # the v0.1 linear layers are 1x1 convolutions without bias: one non-negative weight per channel and tap
        self.linear = nn.ParameterList([nn.Parameter(w.reshape(1, -1, 1, 1).clone(), requires_grad=False) for w in linear])

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        scaled = (images * 2 - 1 - self.shift) / self.scale
        features = self.backbone(scaled)
        return [f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10) for f in features]

    @torch.no_grad()
    def forward(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        distance = torch.zeros(generated.shape[0], device=generated.device, dtype=torch.float32)
        for fg, fr, w in zip(self._features(generated), self._features(reference), self.linear):
            distance += ((fg - fr).pow(2) * w).sum(dim=1).mean(dim=(1, 2))
        return distance


def linear_layers(net: Backbone, state_dict: dict, source: str) -> list[torch.Tensor]:
    """Extract the five v0.1 linear-layer weights (keys lin{i}.model.1.weight) and check their channel counts."""
    channels = ALEX_CHANNELS if net == "alex" else VGG_CHANNELS
    layers = []
    for index, count in enumerate(channels):
        key = f"lin{index}.model.1.weight"
        if key not in state_dict or state_dict[key].numel() != count:
            from atelier.errors import UserError

            raise UserError(f"LPIPS linear-layer file {source} lacks {key} with {count} channels; expected the v0.1 "
                            f"{net}.pth shipped by torchmetrics / lpips")
        layers.append(state_dict[key].float())
    return layers


def build_lpips(
    net: Backbone, weights_dir=None, allow_random: bool = False, seed: int = 0
) -> tuple[LPIPS, dict[str, str]]:
    """LPIPS with published weights, or (allow_random) seeded random ones where a file is missing; plus provenance."""
    backbone_key, linear_key = ("alexnet", "lpips_alex") if net == "alex" else ("vgg16", "lpips_vgg")
    build_backbone = alexnet_features if net == "alex" else vgg16_features
    provenance: dict[str, str] = {}
    try:
        path = weights.resolve(backbone_key, weights_dir)
        backbone = build_backbone(weights.load_state_dict(path), source=str(path))
        provenance[backbone_key] = f"{path.name} (sha256 {weights.sha256_of(path)[:12]})"
    except weights.WeightsUnavailable:
        if not allow_random:
            raise
        backbone = randomize(build_backbone(), seed)
        provenance[backbone_key] = f"RANDOM (seed {seed})"
        logger.warning("LPIPS-%s: %s missing, using random weights (--allow-random-weights)", net, backbone_key)
    try:
        path = weights.resolve(linear_key, weights_dir)
        linear = linear_layers(net, weights.load_state_dict(path), str(path))
        provenance[linear_key] = f"{path.name} (sha256 {weights.sha256_of(path)[:12]})"
    except weights.WeightsUnavailable:
        if not allow_random:
            raise
        generator = torch.Generator().manual_seed(seed)
        channels = ALEX_CHANNELS if net == "alex" else VGG_CHANNELS
        linear = [torch.rand(c, generator=generator) / c for c in channels]
        provenance[linear_key] = f"RANDOM (seed {seed})"
    return LPIPS(backbone, linear).eval(), provenance
