"""Pose rendering: skeleton colours, heatmap peaks, missing joints, CFLD map shapes, keypoint validation."""

import numpy as np
import pytest

from atelier.data.pose import (
    BONES,
    KEYPOINT_NAMES,
    OPENPOSE_COLORS,
    cfld_pose_map,
    draw_skeleton,
    gaussian_heatmaps,
    validate_keypoints,
)
from atelier.errors import UserError

# A standing person in the 256x176 frame, (y, x); left ear missing.
STANDING = np.array([
    [40, 88], [58, 88], [64, 66], [105, 60], [148, 58], [64, 110], [105, 116], [148, 118], [136, 74],
    [190, 72], [240, 70], [136, 102], [190, 104], [240, 106], [36, 83], [36, 93], [38, 78], [-1, -1],
])  # fmt: skip


def test_constants_follow_openpose_coco():
    assert len(KEYPOINT_NAMES) == 18 and KEYPOINT_NAMES[0] == "nose" and KEYPOINT_NAMES[17] == "left_ear"
    assert len(BONES) == 17 and BONES[0] == (1, 2) and BONES[-1] == (15, 17)
    assert len(OPENPOSE_COLORS) == 18 and OPENPOSE_COLORS[0] == (255, 0, 0)


def test_skeleton_paints_joint_colours_at_rescaled_joints():
    skeleton = draw_skeleton(STANDING, (256, 176))
    assert skeleton.dtype == np.uint8 and skeleton.shape == (256, 176, 3)
    for joint in (0, 4, 10, 13):
        y, x = STANDING[joint]
        assert tuple(skeleton[y, x]) == OPENPOSE_COLORS[joint]
    half = draw_skeleton(STANDING, (128, 88))
    assert tuple(half[120, 35]) == OPENPOSE_COLORS[10]  # right ankle (240, 70) halved
    assert skeleton[5, 5].sum() == 0  # black background


def test_skeleton_skips_missing_joint_and_its_bone():
    with_ear = STANDING.copy()
    with_ear[17] = (38, 98)
    difference = np.any(draw_skeleton(with_ear, (256, 176)) != draw_skeleton(STANDING, (256, 176)), axis=-1)
    ys, xs = np.nonzero(difference)
    assert difference.any() and ys.min() >= 34 and ys.max() <= 42 and xs.min() >= 92 and xs.max() <= 102


def test_heatmap_peaks_at_rescaled_joint_and_missing_is_zero():
    heatmaps = gaussian_heatmaps(STANDING, (128, 88))
    assert heatmaps.dtype == np.float32 and heatmaps.shape == (18, 128, 88)
    neck = heatmaps[1]
    assert np.unravel_index(neck.argmax(), neck.shape) == (29, 44)
    assert neck.max() == pytest.approx(1.0)
    assert not heatmaps[17].any()
    full = gaussian_heatmaps(STANDING, (256, 176))
    assert full[1, 58, 88] == pytest.approx(1.0) and full[1, 58 + 6, 88] == pytest.approx(np.exp(-0.5), rel=1e-4)


@pytest.mark.parametrize("size_hw", [(256, 176), (64, 48)])
def test_cfld_pose_map_shape_and_range(size_hw):
    pose_map = cfld_pose_map(STANDING, size_hw)
    assert tuple(pose_map.shape) == (21, *size_hw)
    assert float(pose_map.min()) >= 0.0 and float(pose_map.max()) <= 1.0
    assert float(pose_map[:3].max()) == 1.0


def test_wrong_joint_count_raises_user_error_naming_where():
    with pytest.raises(UserError, match=r"sample\.csv line 3.*found 17 joints"):
        validate_keypoints(STANDING[:17], "sample.csv line 3")
    with pytest.raises(UserError, match="found 18 joints"):
        validate_keypoints(np.zeros((18, 3)), "pose")
