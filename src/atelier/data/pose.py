"""18-keypoint OpenPose (COCO order) poses: constants, skeleton drawing, Gaussian heatmaps and CFLD's 21-channel pose map.

Keypoints are arrays (18, 2) of (y, x) in the 256x176 DeepFashion annotation frame; -1 marks a missing joint. Drawing
rescales them to the requested size with y * H / 256 and x * W / 176 (the rule CFLD and PIDM apply when they resize).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from atelier.errors import UserError

if TYPE_CHECKING:  # torch is imported where the pose map is built, so readers and FashionSynth load fast
    import torch

logger = logging.getLogger(__name__)

FRAME_HW: tuple[int, int] = (256, 176)

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip

# The 17 limbs of the OpenPose body model as drawn by the pose-guided synthesis papers (docs/data-formats.md).
BONES: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

# The OpenPose palette: a hue wheel in 18 steps from red through yellow, green, cyan and blue to magenta.
OPENPOSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

NUM_KEYPOINTS = len(KEYPOINT_NAMES)
BONE_HALF_WIDTH = 1.0  # bones 2 px wide: pixels whose centre lies within 1 px of the segment
JOINT_RADIUS = 3.0
FRAME_MARGIN = 0.5  # a present joint may lie up to half the frame's size beyond its far edge (readers refuse more)


def validate_keypoints(kps, where: str, frame_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Return `kps` as a float32 array (18, 2) of (y, x); raise UserError naming `where` when it is not 18 joints of
    finite numbers or, given the keypoints' `frame_hw`, when a present joint lies outside the frame by more than
    FRAME_MARGIN of its size (a joint at 1e9 is a broken file, not a pose)."""
    try:
        array = np.asarray(kps, dtype=np.float64)  # checked in float64, so 1e300 is reported as itself, not inf
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{where}: expected {NUM_KEYPOINTS} joints as (y, x) number pairs; found {str(kps)[:60]!r}") from None
    if array.ndim != 2 or array.shape != (NUM_KEYPOINTS, 2):
        found = array.shape[0] if array.ndim >= 1 else 0
        raise UserError(
            f"{where}: expected {NUM_KEYPOINTS} joints as (y, x) pairs, shape (18, 2), in OpenPose COCO order; "
            f"found {found} joints (shape {tuple(array.shape)}); use 18-keypoint annotations (-1 for a missing joint)"
        )
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        joint, axis = bad[0]
        raise UserError(f"{where}: {_coordinate_name(joint, axis)} is {array[joint, axis]}; expected a finite number "
                        "(-1 for a missing joint)")
    if frame_hw is not None:
        limits = np.array(frame_hw, dtype=np.float64) * (1 + FRAME_MARGIN)
        outside = np.argwhere((array > limits) & ~missing_mask(array)[:, None])
        if len(outside):
            joint, axis = outside[0]
            raise UserError(
                f"{where}: {_coordinate_name(joint, axis)} is {array[joint, axis]:g}, outside the {frame_hw[0]}x"
                f"{frame_hw[1]} (HxW) keypoint frame by more than {FRAME_MARGIN:.0%} of its size (at most "
                f"{limits[axis]:g}); give coordinates in that frame, -1 for a missing joint")
    return array.astype(np.float32)


def _coordinate_name(joint: int, axis: int) -> str:
    """`keypoints_y[3] (right_elbow)`: one coordinate, named as the annotation files name their columns."""
    return f"keypoints_{'yx'[axis]}[{joint}] ({KEYPOINT_NAMES[joint]})"


def missing_mask(keypoints: np.ndarray) -> np.ndarray:
    """Boolean (18,): True where a joint is missing (a negative coordinate, -1 by convention)."""
    keypoints = np.asarray(keypoints)
    return (keypoints[:, 0] < 0) | (keypoints[:, 1] < 0)


def rescale_keypoints(keypoints, size_hw: tuple[int, int], frame_hw: tuple[int, int] = FRAME_HW) -> np.ndarray:
    """Frame (y, x) -> float32 (y, x) in an image of size_hw (y * H / frame_H, x * W / frame_W); missing stay -1."""
    keypoints = validate_keypoints(keypoints, "keypoints", frame_hw)
    scale = np.array([size_hw[0] / frame_hw[0], size_hw[1] / frame_hw[1]], dtype=np.float32)
    scaled = keypoints * scale
    scaled[missing_mask(keypoints)] = -1.0
    return scaled


def _paint_within(canvas: np.ndarray, p0: np.ndarray, p1: np.ndarray, radius: float, colour) -> None:
    """Paint every pixel whose centre lies within `radius` of the segment p0-p1 (a disk when p0 == p1)."""
    height, width = canvas.shape[:2]
    top = max(int(np.floor(min(p0[0], p1[0]) - radius)), 0)
    bottom = min(int(np.ceil(max(p0[0], p1[0]) + radius)) + 1, height)
    left = max(int(np.floor(min(p0[1], p1[1]) - radius)), 0)
    right = min(int(np.ceil(max(p0[1], p1[1]) + radius)) + 1, width)
    if top >= bottom or left >= right:
        return
    ys = np.arange(top, bottom, dtype=np.float32)[:, None] - p0[0]
    xs = np.arange(left, right, dtype=np.float32)[None, :] - p0[1]
    direction = p1 - p0
    length2 = float(direction @ direction)
    t = np.clip((ys * direction[0] + xs * direction[1]) / length2, 0.0, 1.0) if length2 > 0 else 0.0
    distance2 = (ys - t * direction[0]) ** 2 + (xs - t * direction[1]) ** 2
    canvas[top:bottom, left:right][distance2 <= radius * radius + 1e-6] = colour


def draw_skeleton(keypoints, size_hw: tuple[int, int], frame_hw: tuple[int, int] = FRAME_HW) -> np.ndarray:
    """Draw the OpenPose skeleton (bones 2 px in the bone's colour, joints radius 3) on black: uint8 (H, W, 3)."""
    points = rescale_keypoints(keypoints, size_hw, frame_hw)
    missing = missing_mask(points)
    canvas = np.zeros((size_hw[0], size_hw[1], 3), dtype=np.uint8)
    for index, (start, end) in enumerate(BONES):
        if not (missing[start] or missing[end]):
            _paint_within(canvas, points[start], points[end], BONE_HALF_WIDTH, OPENPOSE_COLORS[index])
    for joint in range(NUM_KEYPOINTS):
        if not missing[joint]:
            _paint_within(canvas, points[joint], points[joint], JOINT_RADIUS, OPENPOSE_COLORS[joint])
    return canvas


def gaussian_heatmaps(
    keypoints, size_hw: tuple[int, int], sigma: float = 6.0, frame_hw: tuple[int, int] = FRAME_HW
) -> np.ndarray:
    """One Gaussian per joint (value 1 at the joint, sigma in frame pixels, rescaled): float32 (18, H, W); zeros if missing."""
    points = rescale_keypoints(keypoints, size_hw, frame_hw)
    missing = missing_mask(points)
    sigma_y = sigma * size_hw[0] / frame_hw[0]
    sigma_x = sigma * size_hw[1] / frame_hw[1]
    # Separable: exp(-(dy^2/2sy^2 + dx^2/2sx^2)) is the outer product of a row profile and a column profile.
    rows = np.arange(size_hw[0], dtype=np.float32)[None, :] - points[:, :1]
    cols = np.arange(size_hw[1], dtype=np.float32)[None, :] - points[:, 1:]
    profile_y = np.exp(-(rows**2) / (2 * sigma_y**2))
    profile_x = np.exp(-(cols**2) / (2 * sigma_x**2))
    profile_y[missing] = 0.0
    return (profile_y[:, :, None] * profile_x[:, None, :]).astype(np.float32)


def cfld_pose_map(keypoints, size_hw: tuple[int, int], frame_hw: tuple[int, int] = FRAME_HW) -> torch.Tensor:
    """CFLD's pose condition (Lu et al., CVPR 2024): RGB skeleton in [0, 1] then 18 heatmaps, float (21, H, W)."""
    import torch

    skeleton = draw_skeleton(keypoints, size_hw, frame_hw).astype(np.float32).transpose(2, 0, 1) / 255.0
    heatmaps = gaussian_heatmaps(keypoints, size_hw, frame_hw=frame_hw)
    return torch.from_numpy(np.concatenate([skeleton, heatmaps], axis=0))
