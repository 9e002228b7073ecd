"""Random plausible standing poses as 18 OpenPose keypoints (y, x) in the 256x176 frame, -1 when out of frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from atelier.data.pose import FRAME_HW
from atelier.data.synth.identity import Identity

# Canonical body in frame pixels at scale 1: origin at the mid-hip, y down (the renderer reads the same numbers).
NECK_Y = -78.0
SHOULDER_DROP = 6.0
UPPER_ARM, FOREARM, THIGH, SHIN = 43.0, 40.0, 54.0, 50.0
NOSE_ABOVE_NECK = 19.0
ARM_MODES = ("down", "out", "hip", "raised")
ARM_MODE_P = (0.5, 0.2, 0.2, 0.1)

View = Literal["front", "back"]


@dataclass(frozen=True)
class Pose:
    """Keypoints int32 (18, 2) of (y, x) in the 256x176 frame (-1 out of frame or hidden) and the camera view."""

    keypoints: np.ndarray
    view: View


def _direction(angle_deg: float, outward: float) -> np.ndarray:
    """Unit vector (y, x) at `angle_deg` from straight down, turned towards `outward` (+1 image right, -1 left)."""
    angle = np.deg2rad(angle_deg)
    return np.array([np.cos(angle), outward * np.sin(angle)])


def _arm_angles(rng: np.random.Generator) -> tuple[float, float]:
    """Upper-arm and forearm angles (degrees from down, positive outward) for one arm."""
    mode = ARM_MODES[int(rng.choice(len(ARM_MODES), p=ARM_MODE_P))]
    if mode == "down":
        upper = rng.uniform(4, 18)
        return upper, upper + rng.uniform(-6, 22)
    if mode == "out":
        upper = rng.uniform(25, 50)
        return upper, upper + rng.uniform(-20, 30)
    if mode == "hip":
        upper = rng.uniform(32, 46)
        return upper, upper - rng.uniform(92, 108)
    upper = rng.uniform(100, 150)
    return upper, upper + rng.uniform(-30, 30)


def _canonical_body(rng: np.random.Generator, shoulder_half: float, hip_half: float) -> np.ndarray:
    """Front-view keypoints (18, 2) float around the mid-hip origin; the person's right is on the image left."""
    points = np.zeros((18, 2))
    points[1] = (NECK_Y, 0.0)
    tilt = np.deg2rad(rng.uniform(-8, 8))
    up = np.array([-np.cos(tilt), np.sin(tilt)])  # head axis, tilted about the neck
    side = np.array([up[1], -up[0]])  # perpendicular to the head axis, pointing to image right
    points[0] = points[1] + NOSE_ABOVE_NECK * up
    for outward, shoulder, elbow, wrist, hip, knee, ankle, eye, ear in ((-1, 2, 3, 4, 8, 9, 10, 14, 16), (1, 5, 6, 7, 11, 12, 13, 15, 17)):
        points[eye] = points[0] + 4.0 * up + outward * 5.5 * side
        points[ear] = points[0] + 1.0 * up + outward * 10.5 * side
        points[shoulder] = (NECK_Y + SHOULDER_DROP, outward * shoulder_half)
        upper, fore = _arm_angles(rng)
        points[elbow] = points[shoulder] + UPPER_ARM * _direction(upper, outward)
        points[wrist] = points[elbow] + FOREARM * _direction(fore, outward)
        points[hip] = (0.0, outward * hip_half)
        thigh = rng.uniform(-2, 9) if rng.random() > 0.1 else rng.uniform(12, 16)
        points[knee] = points[hip] + THIGH * _direction(thigh, outward)
        points[ankle] = points[knee] + SHIN * _direction(thigh + rng.uniform(-6, 3), outward)
    return points


def _place(rng: np.random.Generator, points: np.ndarray) -> np.ndarray:
    """Rotate, scale and shift the canonical body into the frame (sometimes a close-up that crops the feet)."""
    close_up = rng.random() < 0.15
    scale = rng.uniform(1.15, 1.35) if close_up else rng.uniform(0.92, 1.08)
    angle = np.deg2rad(rng.uniform(-5, 5))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    head_top = -(-NECK_Y + NOSE_ABOVE_NECK + 23.0) * scale
    origin_y = max(138.0 + rng.uniform(-6, 10), -head_top + 6.0) if not close_up else -head_top + rng.uniform(6, 14)
    origin = np.array([origin_y, FRAME_HW[1] / 2 + rng.uniform(-10, 10)])
    return points @ rotation.T * scale + origin


def to_frame_keypoints(points: np.ndarray) -> np.ndarray:
    """Round float (y, x) to int32 and mark joints outside the 256x176 frame (or NaN) as -1."""
    rounded = np.round(np.nan_to_num(points, nan=-1.0)).astype(np.int32)
    inside = (rounded[:, 0] >= 0) & (rounded[:, 0] < FRAME_HW[0]) & (rounded[:, 1] >= 0) & (rounded[:, 1] < FRAME_HW[1])
    rounded[~inside] = -1
    return rounded


def sample_pose(rng: np.random.Generator, identity: Identity | None = None, view: View | None = None) -> Pose:
    """Draw a standing pose (arms, legs, head tilt, rotation, scale, shift, front/back view) for an identity's body."""
    shoulder_half = identity.shoulder_half if identity else 21.0
    hip_half = identity.hip_half if identity else 15.0
    view = view or ("front" if rng.random() < 0.7 else "back")
    points = _canonical_body(rng, shoulder_half, hip_half)
    if view == "back":
        # Seen from behind, the person's right side is on the image right and the face is hidden.
        points[:, 1] *= -1
        points[[0, 14, 15]] = np.nan
    return Pose(to_frame_keypoints(_place(rng, points)), view)
