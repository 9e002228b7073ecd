"""OpenPose's body network (Cao et al. 2017, "Realtime Multi-Person 2D Pose Estimation using Part Affinity Fields"),
the 18-part COCO model, in plain torch, and the single-person keypoint read-out the garment metrics use.

The network keeps the layer names of the published PyTorch conversion (`body_pose_model.pth`, the file of the
pytorch-openpose port that ControlNet's annotators also load): a VGG-19 trunk to conv4_2, two CPM layers, then six
stages of two branches, L1 (38 part-affinity channels) and L2 (19 heatmaps: 18 parts + background); every stage after
the first reads the concatenation of both branches and the trunk features (38 + 19 + 128 = 185 channels).

Read-out (`BodyKeypoints`), as that port's `Body.__call__` prepares its input: the image in BGR order is resized by
bicubic interpolation so its height is scale x box size (0.5 x 368), padded right and bottom with 128 to a multiple of
the stride 8, mapped to x / 256 - 0.5; the heatmaps are upsampled x8 (bicubic), cropped and resized back to the image
(bicubic) and smoothed with a Gaussian of sigma 3. Difference, stated: each joint is the highest smoothed peak above
0.1 (one person per image, as try-on outputs are), not OpenPose's multi-person assembly along the affinity fields.
Resizes use torch bicubic (a = -0.75, no antialiasing), the kernel of OpenCV's INTER_CUBIC that the port calls.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PARTS = 18  # OpenPose's COCO order (atelier.data.pose names them): nose, neck, r-shoulder, ...
STRIDE = 8
_TRUNK = (  # name, in, out, kernel; "pool" halves the resolution
    ("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), ("pool",),
    ("conv2_1", 64, 128, 3), ("conv2_2", 128, 128, 3), ("pool",),
    ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3), ("conv3_4", 256, 256, 3), ("pool",),
    ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3), ("conv4_3_CPM", 512, 256, 3), ("conv4_4_CPM", 256, 128, 3),
)
_BRANCH_OUT = {"L1": 38, "L2": 19}


def _stage_layers(stage: int, branch: str) -> list[tuple[str, int, int, int]]:
    """(name, in, out, kernel) of one branch of one stage; the last layer has no ReLU."""
    out = _BRANCH_OUT[branch]
    if stage == 1:
        return [(f"conv5_1_CPM_{branch}", 128, 128, 3), (f"conv5_2_CPM_{branch}", 128, 128, 3),
                (f"conv5_3_CPM_{branch}", 128, 128, 3), (f"conv5_4_CPM_{branch}", 128, 512, 1),
                (f"conv5_5_CPM_{branch}", 512, out, 1)]
    inputs = 128 + sum(_BRANCH_OUT.values())
    return ([(f"Mconv1_stage{stage}_{branch}", inputs, 128, 7)]
            + [(f"Mconv{i}_stage{stage}_{branch}", 128, 128, 7) for i in range(2, 6)]
            + [(f"Mconv6_stage{stage}_{branch}", 128, 128, 1), (f"Mconv7_stage{stage}_{branch}", 128, out, 1)])


class OpenPoseBody(nn.Module):
    """The COCO body model: (B, 3, H, W) input -> (part affinity fields (B, 38, H/8, W/8), heatmaps (B, 19, H/8, W/8))."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk_names: list[str] = []
        for layer in _TRUNK:
            if layer[0] != "pool":
                name, cin, cout, kernel = layer
                self.add_module(name, nn.Conv2d(cin, cout, kernel, padding=kernel // 2))
            self.trunk_names.append(layer[0])
        self.stage_names: list[dict[str, list[str]]] = []
        for stage in range(1, 7):
            names = {}
            for branch in _BRANCH_OUT:
                layers = _stage_layers(stage, branch)
                for name, cin, cout, kernel in layers:
                    self.add_module(name, nn.Conv2d(cin, cout, kernel, padding=kernel // 2))
                names[branch] = [name for name, *_ in layers]
            self.stage_names.append(names)

    def _branch(self, names: list[str], x: torch.Tensor) -> torch.Tensor:
        for index, name in enumerate(names):
            x = getattr(self, name)(x)
            if index < len(names) - 1:  # the branch's last 1x1 conv is linear
                x = F.relu(x)
        return x

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images
        for name in self.trunk_names:
            x = F.max_pool2d(x, 2, 2) if name == "pool" else F.relu(getattr(self, name)(x))
        features = x  # (B, 128, H/8, W/8), fed to every stage
        stage_input = features
        for names in self.stage_names:
            fields, heatmaps = self._branch(names["L1"], stage_input), self._branch(names["L2"], stage_input)
            stage_input = torch.cat([fields, heatmaps, features], dim=1)
        return fields, heatmaps


def gaussian_smooth(maps: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    """scipy's gaussian_filter over the last two axes of (C, H, W) maps (the port's per-part smoothing)."""
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(channel, sigma=sigma) for channel in maps])


def strongest_peaks(heatmaps: np.ndarray, threshold: float = 0.1, sigma: float = 3.0) -> np.ndarray:
    """(PARTS, 3) x, y, score per joint from (>= PARTS, H, W) heatmaps: the highest point of each smoothed map when it
    is above `threshold` (score = the unsmoothed map's value there), else (0, 0, 0) - OpenPose's "not found"."""
    smoothed = gaussian_smooth(heatmaps[:PARTS], sigma)
    joints = np.zeros((PARTS, 3), dtype=np.float32)
    for part, plane in enumerate(smoothed):
        y, x = np.unravel_index(int(np.argmax(plane)), plane.shape)
        if plane[y, x] > threshold:
            joints[part] = (x, y, heatmaps[part, y, x])
    return joints


def _bicubic(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(maps, size=size, mode="bicubic", align_corners=False)


class BodyKeypoints:
    """Single-person body keypoints of RGB uint8 (H, W, 3) images with a network mapping the prepared (1, 3, h, w)
    input to its heatmaps (a torch OpenPoseBody, or an ONNX session wrapped by the caller)."""

    def __init__(self, heatmaps_of, box_size: int = 368, scale: float = 0.5, threshold: float = 0.1) -> None:
        self.heatmaps_of, self.box_size, self.scale, self.threshold = heatmaps_of, box_size, scale, threshold

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(PARTS, 3) x, y, score in the image's pixels; (0, 0, 0) for a joint not found."""
        height, width = image.shape[:2]
        multiplier = self.scale * self.box_size / height
        bgr = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1)[None].float()
        size = (max(1, round(height * multiplier)), max(1, round(width * multiplier)))
        resized = _bicubic(bgr, size)
        pad_h, pad_w = (-size[0]) % STRIDE, (-size[1]) % STRIDE
        padded = F.pad(resized, (0, pad_w, 0, pad_h), value=128.0)
        heatmaps = torch.as_tensor(self.heatmaps_of(padded / 256.0 - 0.5)).float()
        heatmaps = _bicubic(heatmaps, (heatmaps.shape[2] * STRIDE, heatmaps.shape[3] * STRIDE))
        heatmaps = _bicubic(heatmaps[:, :, : size[0], : size[1]], (height, width))
        return strongest_peaks(heatmaps[0].numpy(), self.threshold)
