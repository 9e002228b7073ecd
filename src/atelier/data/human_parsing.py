"""Human parsing maps for try-on: label PNGs a user brings, and a human-parsing ONNX model run on a photo.

The ONNX path follows how SCHP (Li et al., "Self-Correction for Human Parsing", 2020) runs its LIP and ATR models:
the photo is scaled, keeping its aspect ratio, into the model's square input with black borders, read in BGR order
(SCHP reads with OpenCV) and normalised with ImageNet's mean and std in that order; the model's logits (1, labels,
h, w), a quarter of the input's size, are resized back onto the photo and the arg-max is the label. SCHP's exports have
three outputs (parsing, fusion, edge) and its own extractor uses the fusion one: the last output of the label set's
size is taken. onnxruntime is imported only here, when a model is run (`pip install 'atelier[parse]'`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from atelier.data.agnostic import LabelSet
from atelier.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB
IMAGENET_STD = (0.229, 0.224, 0.225)
# SCHP's documented input sizes (H, W): 473x473 for its LIP model, 512x512 for ATR (and Pascal-Person-Part)
DEFAULT_SIZES = {"lip": (473, 473), "atr": (512, 512), "fashionsynth": (512, 512)}


def read_label_map(path: str | os.PathLike, labels: LabelSet) -> np.ndarray:
    """A parse map PNG as uint8 labels (H, W): a palette ("P") or grey ("L") image whose values are label indices.
    UserError naming the file for an unreadable file, a colour image (labels drawn as colours, not indices), or a value
    outside `labels`."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            mode = image.mode
            values = np.asarray(image) if mode in ("P", "L") else None
    except FileNotFoundError:
        raise UserError(f"{path}: parse map not found; check the path") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:  # PIL: a broken chunk
        raise UserError(f"{path}: the parse map is not a readable image ({type(error).__name__}); check the file") from None
    if values is None:
        raise UserError(f"{path}: the parse map is a {mode} image; expected label indices in a palette (P) or grey (L) "
                        "PNG, as human-parsing tools write them (not colours)")
    if int(values.max(initial=0)) >= labels.count:
        raise UserError(f"{path}: the parse map holds label {int(values.max())}; --labels {labels.name} has labels "
                        f"0-{labels.count - 1}: pass the --labels of the parser that made it (lip, atr, fashionsynth)")
    return values.astype(np.uint8)


def _load_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("--parser-model needs onnxruntime, which is not installed: pip install onnxruntime (or "
                        "pip install 'atelier[parse]')") from None
    return onnxruntime


class OnnxParser:
    """A human-parsing ONNX model in one label set, run on CPU with onnxruntime (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, labels: LabelSet, size_hw: tuple[int, int] | None = None,
                 channels: str = "bgr") -> None:
        onnxruntime = _load_onnxruntime()
        self.path, self.labels, self.channels = Path(path), labels, channels
        if not self.path.is_file():
            raise UserError(f"--parser-model {self.path}: not found; pass a human-parsing .onnx file")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for every unreadable model
            reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
            raise UserError(f"--parser-model {self.path}: not a model onnxruntime can load ({reason}); expected a "
                            "human-parsing .onnx export") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_type = np.float16 if model_input.type == "tensor(float16)" else np.float32
        shape = list(model_input.shape)
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):  # a named (dynamic) side is fine
            raise UserError(f"--parser-model {self.path}: its input {self.input_name} has shape {shape}; expected "
                            "NCHW images (1, 3, H, W)")
        fixed = tuple(shape[2:]) if all(isinstance(side, int) and side > 0 for side in shape[2:]) else None
        if fixed and size_hw and tuple(size_hw) != fixed:
            raise UserError(f"--parser-size {size_hw[0]}x{size_hw[1]}: the model {self.path.name} takes "
                            f"{fixed[0]}x{fixed[1]} (HxW); leave --parser-size out or pass that size")
        self.size_hw = fixed or tuple(size_hw or DEFAULT_SIZES.get(labels.name, (512, 512)))

    def _input(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """The model's input (1, 3, h, w) and where the photo lies in it (left, top, right, bottom, in input pixels)."""
        height, width = image.shape[:2]
        input_h, input_w = self.size_hw
        scale = min(input_h / height, input_w / width)
        fitted = (max(1, round(width * scale)), max(1, round(height * scale)))
        left, top = (input_w - fitted[0]) // 2, (input_h - fitted[1]) // 2
        canvas = np.zeros((input_h, input_w, 3), dtype=np.float32)  # black borders, as SCHP's affine warp leaves
        resized = Image.fromarray(image).resize(fitted, Image.Resampling.BILINEAR)
        canvas[top : top + fitted[1], left : left + fitted[0]] = np.asarray(resized, dtype=np.float32)
        mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
        if self.channels == "bgr":
            canvas, mean, std = canvas[..., ::-1], mean[::-1], std[::-1]
        normalised = (canvas / 255.0 - mean) / std
        batch = np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=self.input_type)
        return batch, (left, top, left + fitted[0], top + fitted[1])

    def _logits(self, outputs: list[np.ndarray]) -> np.ndarray:
        """The last output shaped (1, labels, h, w); UserError naming every output's shape when there is none."""
        for output in reversed(outputs):
            if output.ndim == 4 and output.shape[:2] == (1, self.labels.count):
                return output[0].astype(np.float32)
        shapes = ", ".join(str(tuple(output.shape)) for output in outputs)
        raise UserError(f"--parser-model {self.path}: its outputs are {shapes}; expected logits (1, {self.labels.count}, "
                        f"h, w) for --labels {self.labels.name}: pass the label set the model was trained on (lip 20 "
                        "labels, atr 18, fashionsynth 8)")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The parse map (uint8 labels (H, W)) of an RGB photo (uint8 (H, W, 3))."""
        batch, box = self._input(image)
        logits = self._logits(self.session.run(None, {self.input_name: batch}))
        ratio_y, ratio_x = logits.shape[1] / self.size_hw[0], logits.shape[2] / self.size_hw[1]
        crop = (box[0] * ratio_x, box[1] * ratio_y, box[2] * ratio_x, box[3] * ratio_y)  # the photo, in logit pixels
        size = (image.shape[1], image.shape[0])
        scores = [np.asarray(Image.fromarray(channel, "F").resize(size, Image.Resampling.BILINEAR, box=crop))
                  for channel in logits]  # fmt: skip
        return np.stack(scores).argmax(0).astype(np.uint8)
