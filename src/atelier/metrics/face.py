"""The face-identity score of MCLD's evaluation (Liu et al., CVPR 2025): CFLD's metrics plus, for each pair of output
and ground truth at the test size (256 px high), the cosine similarity and the Euclidean distance of their raw ArcFace
embeddings (insightface's buffalo_s in MCLD; the user's recogniser .onnx here, see atelier.data.face_id), averaged over
the pairs where both images give a face.

Landmarks: with a detector (`--face-detector`, SCRFD) each image's own largest face; without one, the target pose's
keypoints (`--face-keypoints`, the DeepFashion annotation CSV of the ground-truth images), used for both images of a
pair since the output is drawn in the target's pose: a pair counts when that pose has both eyes and the nose.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from atelier.data.face_id import ArcFace, Scrfd, align_face, landmarks_from_keypoints

FACE_KEYS = ("face_cos", "face_dist", "face_pairs")
FACE_LABELS = {
    "face_cos": "face identity: mean cosine similarity of the raw ArcFace embeddings of output and ground truth at the "
                "test size, over the pairs where both images give a face (MCLD's face score)",
    "face_dist": "face identity: mean Euclidean distance of the raw (not normalised) ArcFace embeddings, same pairs",
    "face_pairs": "face identity: number of pairs where both images give a face",
}
NO_MODEL = ("the face score needs an ArcFace recogniser: pass --face-model FILE.onnx (e.g. insightface's "
            "buffalo_s w600k_mbf.onnx), optionally --face-detector FILE.onnx (SCRFD)")


def hwc_uint8(image: np.ndarray) -> np.ndarray:
    """A protocol's (3, H, W) image (uint8, or floats in [0, 1]) as an (H, W, 3) uint8 RGB array."""
    if image.dtype != np.uint8:
        image = np.clip(np.rint(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image.transpose(1, 2, 0))


class FaceScorer:
    """Scores one pair: (cosine, distance) of the two faces' embeddings, or None when either image gives no face."""

    def __init__(self, model: str | os.PathLike, detector: str | os.PathLike | None = None,
                 keypoints: dict[str, np.ndarray] | None = None, scale: tuple[float, float] = (1.0, 1.0)) -> None:
        self.model = ArcFace(model, "--face-model")
        self.detector = Scrfd(detector, "--face-detector") if detector is not None else None
        self.keypoints, self.scale = keypoints or {}, np.asarray(scale, np.float64)
        self.path = Path(model)

    def _landmarks(self, image: np.ndarray, points: np.ndarray | None) -> np.ndarray | None:
        if self.detector is not None:
            return self.detector.landmarks(image)
        return landmarks_from_keypoints(points) if points is not None else None

    def target_points(self, ground_truth_name: str) -> np.ndarray | None:
        """The target pose's 18 keypoints (y, x) scaled to the test size, NaN where missing; None when not listed."""
        points = self.keypoints.get(ground_truth_name)
        if points is None:
            return None
        points = np.asarray(points, np.float64)
        return np.where(points < 0, np.nan, points * self.scale)

    def __call__(self, generated: np.ndarray, truth: np.ndarray, ground_truth_name: str) -> tuple[float, float] | None:
        points = self.target_points(ground_truth_name)
        embeddings = []
        for image in (hwc_uint8(generated), hwc_uint8(truth)):
            landmarks = self._landmarks(image, points)
            if landmarks is None:
                return None
            embeddings.append(self.model(align_face(image, landmarks)).astype(np.float64))
        a, b = embeddings
        norms = float(np.linalg.norm(a) * np.linalg.norm(b))
        cosine = float(a @ b / norms) if norms > 0 else 0.0
        return cosine, float(np.linalg.norm(a - b))
