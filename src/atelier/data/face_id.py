"""Face identity embeddings: the face condition of MCLD (Liu et al., CVPR 2025), which uses insightface's antelopev2
ArcFace (Deng et al., CVPR 2019) raw 512-d embedding of the largest face, and zeros for a photo without one.

The user brings the model files (nothing is downloaded): the recogniser `glintr100.onnx` and, optionally, the detector
`scrfd_10g_bnkps.onnx` (SCRFD, Guo et al., ICLR 2022), both from antelopev2. They run with onnxruntime on CPU,
imported only here (pip install 'atelier[mcld]').

Recognition: five landmarks (image-left eye, image-right eye, nose, image-left and image-right mouth corner, as (x, y)
pixels) are aligned to ArcFace's 112x112 template by a least-squares similarity (Umeyama 1991, no reflection); the
crop is warped with OpenCV (bilinear, black outside), read as RGB and scaled to (x - 127.5) / 127.5, NCHW.

Landmarks come from the first of:
- the SCRFD detector: the photo is scaled, keeping its aspect ratio, into the model's input (640x640 when the model
  leaves it open) at the top-left corner with black padding, read as RGB (x - 127.5) / 128; its nine outputs are
  scores, box distances and landmark offsets for strides 8, 16 and 32 with two anchors per cell at (col, row) *
  stride; a box is (cx - l, cy - t, cx + r, cy + b) * stride and landmark k is (cx + dx_k, cy + dy_k) * stride;
  boxes scoring >= 0.5 are kept after non-maximum suppression (IoU 0.4) and the largest box's landmarks are used.
- the photo's 18 COCO keypoints (nose, eyes): an approximation. Eyes and nose fix a similarity to the template's
  first three points and the mouth corners are put where the template has them under that similarity, so the crop
  is the 3-point alignment; ears are not used. Without both eyes and the nose there is no face (zeros).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from atelier.errors import UserError

logger = logging.getLogger(__name__)

ARCFACE_SIZE = 112
# ArcFace's 112x112 template (x, y): image-left eye, image-right eye, nose, image-left and image-right mouth corner
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                     [70.7299, 92.2041]], dtype=np.float64)  # fmt: skip
EMBEDDING_SIZE = 512  # glintr100's
DETECTOR_SIZE = (640, 640)  # (W, H) insightface runs SCRFD at when the model leaves its input open
DETECTOR_STRIDES = (8, 16, 32)
DETECTOR_ANCHORS = 2
SCORE_THRESHOLD, NMS_IOU = 0.5, 0.4
INSTALL = "pip install 'atelier[mcld]'"


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of the similarity (rotation, uniform scale, shift; no reflection) that maps the (N, 2) points
    `source` onto `target` best in least squares (Umeyama 1991)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    left, singular, right = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(left) * np.linalg.det(right) < 0:  # a reflection fits better: take the best rotation instead
        sign[1, 1] = -1.0
    rotation = left @ sign @ right
    variance = (source_centred**2).sum() / len(source)
    scale = float((singular * np.diag(sign)).sum() / variance) if variance > 0 else 1.0
    shift = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, shift[:, None]])


def landmarks_from_keypoints(points: np.ndarray) -> np.ndarray | None:
    """Five approximate ArcFace landmarks (x, y) from 18 COCO keypoints given as (y, x) image pixels (NaN missing):
    see the module docstring. None without both eyes and the nose, or with eyes closer than 2 px."""
    points = np.asarray(points, dtype=np.float64)
    nose, eyes = points[0], points[[14, 15]]
    if not (np.isfinite(nose).all() and np.isfinite(eyes).all()):
        return None
    eyes_xy = eyes[:, ::-1][np.argsort(eyes[:, 1])]  # image-left eye first, as the template has it
    if float(np.linalg.norm(eyes_xy[1] - eyes_xy[0])) < 2.0:
        return None
    known = np.vstack([eyes_xy, nose[::-1]])
    to_template = np.vstack([similarity_transform(known, TEMPLATE[:3]), [0.0, 0.0, 1.0]])
    from_template = np.linalg.inv(to_template)
    mouth = TEMPLATE[3:] @ from_template[:2, :2].T + from_template[:2, 2]
    return np.vstack([known, mouth])


def _cv2():
    try:
        import cv2
    except ImportError:
        raise UserError(f"face alignment needs OpenCV, which is not installed: {INSTALL}") from None
    return cv2


def align_face(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 RGB ArcFace crop (uint8) of an RGB image given five landmarks (x, y)."""
    matrix = similarity_transform(landmarks, TEMPLATE)
    return _cv2().warpAffine(np.ascontiguousarray(image), matrix, (ARCFACE_SIZE, ARCFACE_SIZE), borderValue=0.0)


def _session(path: Path, flag: str, what: str):
    """An onnxruntime CPU session of `path`; UserError naming the file for a missing or unloadable model."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"{flag} needs onnxruntime, which is not installed: {INSTALL}") from None
    if not path.is_file():
        raise UserError(f"{flag} {path}: not found; pass {what}")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for every unreadable model
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise UserError(f"{flag} {path}: not a model onnxruntime can load ({reason}); expected {what}") from None


def _image_input(session, path: Path, flag: str, what: str) -> tuple[str, tuple[int, int] | None, type]:
    """The model's input name, its fixed (H, W) or None, and its float type; UserError unless it takes (1, 3, H, W)."""
    model_input = session.get_inputs()[0]
    shape = list(model_input.shape)
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):  # a named (open) side is fine
        raise UserError(f"{flag} {path}: its input {model_input.name} has shape {shape}; expected {what} taking NCHW "
                        "RGB images (1, 3, H, W)")
    fixed = tuple(shape[2:]) if all(isinstance(side, int) and side > 0 for side in shape[2:]) else None
    dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
    return model_input.name, fixed, dtype


class ArcFace:
    """An ArcFace recogniser ONNX (antelopev2's glintr100.onnx): aligned 112x112 crop -> raw embedding."""

    WHAT = "an ArcFace recogniser .onnx (antelopev2's glintr100.onnx: input 1x3x112x112, output the embedding)"

    def __init__(self, path: str | os.PathLike, flag: str = "--face-model") -> None:
        self.path = Path(path)
        self.session = _session(self.path, flag, self.WHAT)
        self.input_name, fixed, self.dtype = _image_input(self.session, self.path, flag, self.WHAT)
        if fixed is not None and fixed != (ARCFACE_SIZE, ARCFACE_SIZE):
            raise UserError(f"{flag} {self.path}: its input is {fixed[0]}x{fixed[1]}; expected {self.WHAT}")
        output = self.session.get_outputs()[0]
        width = output.shape[-1] if output.shape else None
        if len(output.shape) != 2 or (isinstance(width, int) and width < 2):
            raise UserError(f"{flag} {self.path}: its output {output.name} has shape {list(output.shape)}; expected "
                            f"{self.WHAT}")
        self.size = width if isinstance(width, int) else EMBEDDING_SIZE

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        """The raw (not normalised) embedding float32 (D,) of an aligned 112x112 RGB crop."""
        batch = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        output = self.session.run(None, {self.input_name: batch.astype(self.dtype)})[0]
        return np.asarray(output, dtype=np.float32).reshape(-1)


class Scrfd:
    """An SCRFD face detector ONNX with landmarks (antelopev2's scrfd_10g_bnkps.onnx); see the module docstring."""

    WHAT = "an SCRFD face detector .onnx with landmarks (antelopev2's scrfd_10g_bnkps.onnx: nine outputs)"

    def __init__(self, path: str | os.PathLike, flag: str = "--face-detector") -> None:
        self.path, self.flag = Path(path), flag
        self.session = _session(self.path, flag, self.WHAT)
        self.input_name, fixed, self.dtype = _image_input(self.session, self.path, flag, self.WHAT)
        self.size_wh = (fixed[1], fixed[0]) if fixed else DETECTOR_SIZE
        if len(self.session.get_outputs()) != 3 * len(DETECTOR_STRIDES):
            raise UserError(f"{flag} {self.path}: has {len(self.session.get_outputs())} outputs; expected {self.WHAT}")

    def _outputs(self, outputs: list[np.ndarray]) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """(stride, scores (N,), box distances (N, 4), landmark offsets (N, 10)) per stride; UserError for other shapes."""
        width, height = self.size_wh
        levels = []
        for index, stride in enumerate(DETECTOR_STRIDES):
            rows = (height // stride) * (width // stride) * DETECTOR_ANCHORS
            found = [np.asarray(outputs[index + k * len(DETECTOR_STRIDES)], np.float32) for k in range(3)]
            found = [array[0] if array.ndim == 3 else array for array in found]  # batched exports
            if [array.shape for array in found] != [(rows, 1), (rows, 4), (rows, 10)]:
                shapes = ", ".join(str(array.shape) for array in found)
                raise UserError(f"{self.flag} {self.path}: stride {stride} outputs have shapes {shapes}; expected "
                                f"({rows}, 1), ({rows}, 4), ({rows}, 10) for a {width}x{height} input: {self.WHAT}")
            levels.append((stride, found[0][:, 0], found[1], found[2]))
        return levels

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """The five landmarks (x, y) of the largest face found in an RGB uint8 image, or None."""
        cv2 = _cv2()
        height, width = image.shape[:2]
        input_w, input_h = self.size_wh
        if height / width > input_h / input_w:  # taller than the input: fit the height
            fitted_h, fitted_w = input_h, max(1, int(input_h * width / height))
        else:
            fitted_w, fitted_h = input_w, max(1, int(input_w * height / width))
        scale = fitted_h / height
        canvas = np.zeros((input_h, input_w, 3), dtype=np.float32)
        canvas[:fitted_h, :fitted_w] = cv2.resize(image, (fitted_w, fitted_h))
        batch = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None].astype(self.dtype)
        boxes, scores, points = [], [], []
        for stride, score, distance, offset in self._outputs(self.session.run(None, {self.input_name: batch})):
            rows, cols = input_h // stride, input_w // stride
            centres = np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), -1).reshape(-1, 2).astype(np.float32)
            centres = np.repeat(centres * stride, DETECTOR_ANCHORS, axis=0)
            keep = score >= SCORE_THRESHOLD
            centre, distance, offset = centres[keep], distance[keep] * stride, offset[keep] * stride
            boxes.append(np.hstack([centre - distance[:, :2], centre + distance[:, 2:]]))
            points.append(offset.reshape(-1, 5, 2) + centre[:, None])
            scores.append(score[keep])
        boxes, scores, points = np.vstack(boxes) / scale, np.concatenate(scores), np.vstack(points) / scale
        kept = _non_maximum_suppression(boxes, scores, NMS_IOU)
        if not kept:
            return None
        areas = [(boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1]) for i in kept]
        return points[kept[int(np.argmax(areas))]].astype(np.float64)


def _non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices of the boxes (x1, y1, x2, y2) kept by greedy non-maximum suppression, best score first."""
    order = list(np.argsort(-scores, kind="stable"))
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    kept = []
    while order:
        best, order = order[0], np.asarray(order[1:], dtype=np.int64)
        kept.append(int(best))
        if not len(order):
            break
        top_left = np.maximum(boxes[best, :2], boxes[order, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[order, 2:])
        overlap = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        ratio = overlap / np.maximum(areas[best] + areas[order] - overlap, 1e-9)
        order = list(order[ratio <= iou])
    return kept


class FaceEmbedder:
    """The face condition of one photo: the recogniser's embedding of the largest face, zeros without a face or without
    a recogniser (one warning then, for the whole run). Counts where each photo's landmarks came from."""

    def __init__(self, model: str | os.PathLike | None, detector: str | os.PathLike | None = None) -> None:
        self.model = ArcFace(model) if model is not None else None
        self.detector = Scrfd(detector) if detector is not None else None
        self.size = self.model.size if self.model is not None else EMBEDDING_SIZE
        self.sources = {"detector": 0, "keypoints": 0, "none": 0}
        self._warned = False

    def __call__(self, image: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        """float32 (D,) for an RGB uint8 image; `points`: its 18 COCO keypoints as (y, x) pixels (NaN missing)."""
        if self.model is None:
            if not self._warned:
                logger.warning("no face model given (--face-model glintr100.onnx): every face embedding is zeros, as "
                               "MCLD's loader uses for a photo without a face")
                self._warned = True
            self.sources["none"] += 1
            return np.zeros(self.size, dtype=np.float32)
        landmarks, source = None, "none"
        if self.detector is not None:
            landmarks, source = self.detector.landmarks(image), "detector"
        if landmarks is None and points is not None:
            landmarks, source = landmarks_from_keypoints(points), "keypoints"
        if landmarks is None:
            self.sources["none"] += 1
            return np.zeros(self.size, dtype=np.float32)
        self.sources[source] += 1
        return self.model(align_face(image, landmarks))
