"""Sketches of images for the Uni-adapter's sketch branch: XDoG lines (no weights) or PiDiNet (Su et al. 2021).

- `xdog_sketch` (the default; atelier.utils.xdog): a line drawing from an extended difference of Gaussians (Winnemöller et al. 2012),
  lines only: the sharpened DoG response on the dark side of an edge, soft-thresholded with tanh (the defaults were
  chosen by eye on FashionSynth photos at 48x64 px, where lines come out 1-2 px wide). Deterministic,
  plain torch, no weights.
- `PiDiNet`: the pixel-difference edge network in plain torch, built as the published `table5_pidinet.pth`
  (config carv4, compact spatial attention, dilation modules of 24 channels, 60 base channels: the file
  controlnet_aux's PidiNetDetector and the released Uni-DlLoRA `pidnet/` folder load). Its pixel-difference
  convolutions (central `cd`, angular `ad`, radial `rd`) are applied as the equivalent vanilla kernels, so the
  state-dict keys are the published ones. Input as controlnet_aux feeds it: BGR in [0, 1]; output: the fused map.
Both return (B, 1, H, W) maps in [0, 1] with white lines on black, the convention of T2I-Adapter sketch models.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from atelier.errors import UserError
from atelier.utils.xdog import xdog_sketch

logger = logging.getLogger(__name__)

PIDINET_WEIGHT_NAME = "table5_pidinet.pth"  # the name in lllyasviel/Annotators and in Uni-DlLoRA's pidnet/
PIDINET_FOLDER = "pidnet"  # (sic) the released Uni-DlLoRA checkpoint's folder name
CARV4 = ("cd", "ad", "rd", "cv") * 4  # PiDiNet's carv4 pattern over its 16 pixel-difference layers

Sketcher = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SketchSettings:
    """Which sketch extractor feeds the sketch adapter: `xdog` (no weights) or `pidinet` (published weights)."""

    extractor: Literal["xdog", "pidinet"] = "xdog"
    pidinet_weights: str | None = None  # table5_pidinet.pth, or a folder holding it (e.g. a released pidnet/)
    sigma: float = 0.8  # XDoG: inner Gaussian in pixels at the sketch's resolution
    k: float = 1.6  # XDoG: outer Gaussian = k x sigma
    sharpen: float = 20.0  # XDoG: weight of the DoG response (p)
    phi: float = 8.0  # XDoG: steepness of the tanh ramp
    threshold: float = 0.1  # XDoG: response below this is paper (removes sensor-noise speckles)


# --- PiDiNet ----------------------------------------------------------------------------------------------------------
def pixel_difference_kernel(kind: str, weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(vanilla kernel, padding) equal to PiDiNet's pixel-difference convolution `kind` with 3x3 `weight`."""
    if kind == "cv":
        return weight, 1
    flat = weight.flatten(2)
    if kind == "cd":  # sum_i w_i (x_i - x_centre): the centre tap loses the sum of all taps
        centre = torch.zeros_like(flat)
        centre[:, :, 4] = flat.sum(-1)
        return (flat - centre).view_as(weight), 1
    if kind == "ad":  # sum_i w_i (x_i - x_clockwise-neighbour(i))
        return (flat - flat[:, :, [3, 0, 1, 6, 4, 2, 7, 8, 5]]).view_as(weight), 1
    if kind == "rd":  # 5x5: outer ring minus inner ring along the 8 directions
        ring = torch.zeros(*flat.shape[:2], 25, dtype=weight.dtype, device=weight.device)
        ring[:, :, [0, 2, 4, 10, 14, 20, 22, 24]] = flat[:, :, 1:]
        ring[:, :, [6, 7, 8, 11, 13, 16, 17, 18]] = -flat[:, :, 1:]
        return ring.view(*flat.shape[:2], 5, 5), 2
    raise ValueError(f"unknown pixel-difference convolution {kind!r}; expected cv, cd, ad or rd")


class PixelDifferenceConv(nn.Module):
    """A 3x3 convolution whose taps act on pixel differences (cd, ad, rd) or on pixels (cv); key `weight`."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, groups: int = 1):
        super().__init__()
        self.kind, self.groups = kind, groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, padding = pixel_difference_kernel(self.kind, self.weight)
        return F.conv2d(x, kernel, padding=padding, groups=self.groups)


class PDCBlock(nn.Module):
    """Depthwise pixel-difference conv -> ReLU -> 1x1 conv, plus the input (max-pooled + 1x1 shortcut when strided)."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
            self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.conv1 = PixelDifferenceConv(kind, in_channels, in_channels, groups=in_channels)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = self.pool(x)
        y = self.conv2(self.relu2(self.conv1(x)))
        return y + (self.shortcut(x) if self.stride > 1 else x)


class CDCM(nn.Module):
    """Compact dilation convolution module: ReLU -> 1x1 -> sum of four 3x3 convs dilated 5, 7, 9, 11."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        for index, dilation in enumerate((5, 7, 9, 11), start=1):
            setattr(self, f"conv2_{index}", nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.relu1(x))
        return self.conv2_1(x) + self.conv2_2(x) + self.conv2_3(x) + self.conv2_4(x)


class CSAM(nn.Module):
    """Compact spatial attention module: x times a sigmoid map from ReLU -> 1x1 (4 channels) -> 3x3 (1 channel)."""

    def __init__(self, channels: int):
        super().__init__()
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(channels, 4, kernel_size=1)
        self.conv2 = nn.Conv2d(4, 1, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(self.relu1(x))))


class MapReduce(nn.Module):
    """1x1 convolution to a single edge map."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PiDiNet(nn.Module):
    """Pixel difference network (Su et al. 2021), the table5_pidinet variant: 4 stages, CDCM + CSAM side outputs."""

    def __init__(self, channels: int = 60, dilation_channels: int = 24, kinds: tuple[str, ...] = CARV4):
        super().__init__()
        widths = (channels, 2 * channels, 4 * channels, 4 * channels)
        self.init_block = PixelDifferenceConv(kinds[0], 3, channels)
        layer = 1
        for stage, blocks in enumerate((3, 4, 4, 4), start=1):
            for index in range(1, blocks + 1):
                strided = stage > 1 and index == 1
                source = widths[stage - 2] if strided else widths[stage - 1]
                block = PDCBlock(kinds[layer], source, widths[stage - 1], stride=2 if strided else 1)
                setattr(self, f"block{stage}_{index}", block)
                layer += 1
        self.dilations = nn.ModuleList(CDCM(width, dilation_channels) for width in widths)
        self.attentions = nn.ModuleList(CSAM(dilation_channels) for _ in widths)
        self.conv_reduces = nn.ModuleList(MapReduce(dilation_channels) for _ in widths)
        self.classifier = nn.Conv2d(4, 1, kernel_size=1)

    def _stage(self, x: torch.Tensor, stage: int, blocks: int) -> torch.Tensor:
        for index in range(1, blocks + 1):
            x = getattr(self, f"block{stage}_{index}")(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) BGR images in [0, 1] -> fused edge probability (B, 1, H, W)."""
        height, width = images.shape[-2:]
        x1 = self._stage(self.init_block(images), 1, 3)  # full resolution, C channels
        x2 = self._stage(x1, 2, 4)  # 1/2, 2C
        x3 = self._stage(x2, 3, 4)  # 1/4, 4C
        x4 = self._stage(x3, 4, 4)  # 1/8, 4C
        side_maps = []
        for index, features in enumerate((x1, x2, x3, x4)):
            reduced = self.conv_reduces[index](self.attentions[index](self.dilations[index](features)))
            side_maps.append(F.interpolate(reduced, (height, width), mode="bilinear", align_corners=False))
        return torch.sigmoid(self.classifier(torch.cat(side_maps, dim=1)))


def pidinet_weight_file(path: str | os.PathLike) -> Path:
    """The PiDiNet weight file: PATH itself, or PATH/table5_pidinet.pth, or PATH/pidnet/table5_pidinet.pth."""
    path = Path(path).expanduser()
    for candidate in (path, path / PIDINET_WEIGHT_NAME, path / PIDINET_FOLDER / PIDINET_WEIGHT_NAME):
        if candidate.is_file():
            return candidate
    raise UserError(f"PiDiNet weights {path} not found: expected {PIDINET_WEIGHT_NAME} or a folder holding it "
                    "(lllyasviel/Annotators, or the released Uni-DlLoRA pidnet/ folder)")


def load_pidinet(path: str | os.PathLike) -> PiDiNet:
    """PiDiNet with the published weights (`{'state_dict': {'module.*': ...}}`, read with weights_only=True)."""
    file = pidinet_weight_file(path)
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle and zip errors have no common base class
        raise UserError(f"PiDiNet weights {file} could not be read as a tensor checkpoint ({str(error).splitlines()[0][:160]})") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"PiDiNet weights {file}: expected a dict with 'state_dict' (the table5_pidinet.pth layout)")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    net = PiDiNet()
    missing, unexpected = (sorted(set(net.state_dict()) - set(state)), sorted(set(state) - set(net.state_dict())))
    if missing or unexpected:
        raise UserError(f"PiDiNet weights {file} do not match table5_pidinet (missing {missing[:2]}, unexpected "
                        f"{unexpected[:2]}); only the full PiDiNet with --sa --dil (table5_pidinet.pth) is supported")
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(f"PiDiNet weights {file}: {str(error).splitlines()[-1].strip()[:200]}") from None
    return net.eval().requires_grad_(False)


def pidinet_sketcher(net: PiDiNet) -> Sketcher:
    """A sketcher running PiDiNet as controlnet_aux does: RGB in [-1, 1] -> BGR in [0, 1] -> fused edge map."""

    @torch.no_grad()
    def sketch(images: torch.Tensor) -> torch.Tensor:
        param = next(net.parameters())
        bgr = ((images.to(param.device, param.dtype) + 1) / 2).flip(1)
        return net(bgr).float().clamp(0, 1)

    return sketch


def make_sketcher(settings: SketchSettings) -> Sketcher:
    """The sketch extractor the settings name: XDoG with its parameters, or PiDiNet loaded from its weight file."""
    if settings.extractor == "pidinet":
        if not settings.pidinet_weights:
            raise UserError("sketch.extractor is pidinet but sketch.pidinet_weights is empty; pass the path of "
                            f"{PIDINET_WEIGHT_NAME} (or use sketch.extractor=xdog, which needs no weights)")
        return pidinet_sketcher(load_pidinet(settings.pidinet_weights))
    if settings.extractor != "xdog":
        raise UserError(f"sketch.extractor {settings.extractor!r}: expected xdog or pidinet")
    return lambda images: xdog_sketch(images, settings.sigma, settings.k, settings.sharpen, settings.phi, settings.threshold)
