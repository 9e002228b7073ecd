"""Plain-torch feature networks for the metrics (no torchvision): AlexNet and VGG16 for LPIPS, Inception-v3 for FID.

Each network keeps the parameter names of the published state dicts (torchvision, pytorch-fid), so the standard
weight files load as they are; `load_published_weights` checks every name and shape and ignores the classifier
heads the metrics never use.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from atelier.errors import UserError


def load_published_weights(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, ignore_prefixes: Iterable[str] = (),
    layout: str = "the published torchvision / pytorch-fid layout",
) -> None:
    """Copy a published state dict into `module`, failing with a clear message on a missing or misshapen tensor
    (`layout` names the file the message asks for)."""
    ignore_prefixes = tuple(ignore_prefixes)
    expected = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise UserError(
            f"weights file {source} lacks {len(missing)} tensors the network needs (first: {', '.join(missing[:3])}); "
            f"expected {layout}: use the original file, unmodified"
        )
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise UserError(f"weights file {source} has tensors of the wrong shape: {'; '.join(wrong[:3])}; "
                        "is it the file for another network?")
    unexpected = [
        k for k in state_dict
        if k not in expected and not k.endswith("num_batches_tracked") and not k.startswith(ignore_prefixes)
    ]
    if unexpected:
        raise UserError(f"weights file {source} has tensors this network does not have (first: {', '.join(unexpected[:3])}); "
                        "is it the file for another network?")
    with torch.no_grad():
        module.load_state_dict({k: state_dict[k].to(v.dtype) for k, v in expected.items()}, strict=False)


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Re-initialise deterministically from `seed` (--allow-random-weights): He-normal convolutions, identity norms.

    He initialisation keeps activations O(1) through the ~90 layers of Inception, so random features still vary
    from image to image (the default PyTorch init shrinks them towards zero and every FID would read 0).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                fan_in = layer.weight[0].numel()
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if layer.bias is not None:
                    layer.bias.zero_()
            elif isinstance(layer, nn.BatchNorm2d):
                layer.reset_parameters()
    return module


class TappedFeatures(torch.nn.Module):
    """A torchvision-layout `features` trunk that returns the activations after the layers in `tap_indices` (LPIPS)."""

    features: torch.nn.Sequential
    tap_indices: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.tap_indices:
                taps.append(x)
        return taps


def build_trunk(model: TappedFeatures, state_dict: dict | None, source: str) -> TappedFeatures:
    """Load torchvision weights into a trunk (the classifier head is ignored) and freeze it for evaluation."""
    if state_dict is not None:
        load_published_weights(model, state_dict, source, ignore_prefixes=("classifier.",))
    return model.eval().requires_grad_(False)
