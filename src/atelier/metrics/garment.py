"""The garment-design metrics of the `mgd` protocol (Multimodal Garment Designer, Baldrati et al., ICCV 2023): the
CLIP score of an output against its caption, the distance of its body keypoints from the input pose, the distance of
its sketch from the input sketch, and the weight-free variants offered beside them (see `metrics.protocols` for what
follows MGD and what is our reading).

Everything is measured in MGD's output frame, 384x512 (width x height), the size its eval.py generates.

- CLIP score, as torchmetrics' CLIPScore computes it (MGD's README pins torchmetrics 0.11): unit-norm image and text
  embeddings, 100 x their cosine per image, the score = max(mean over images, 0) (CLIPScore.compute clamps the mean -
  read in torchmetrics 1.9, not checked in 0.11 - though its docstring writes the clamp per pair). Images go through
  CLIPImageProcessor's recipe (PIL bicubic so the shorter side is the model's size, centre crop, /255, the model's
  mean and std, read from the folder's preprocessor_config.json); captions are tokenised untruncated, padded, then cut
  to the model's max_position_embeddings (77), as torchmetrics does.
- Keypoint distance: mean Euclidean distance over the joints present in both sets (MGD draws a joint when x > 1 and
  y > 1; a detector's joint is present when its score is > 0).
- Sketch distance: both sketches binarised as MGD's loader binarises its input sketch (PIL resize to 384x512, then a
  pixel is a line where its 8-bit value is above 234: its `invert` and threshold 20), compared inside the bounding box
  of the input sketch's lines (where the garment is drawn); the share of pixels that differ.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atelier.errors import UserError

logger = logging.getLogger(__name__)

FRAME = (384, 512)  # width x height of MGD's outputs: every distance is measured here
SKETCH_LINE = 235  # an 8-bit sketch pixel is a line from this value up (MGD: invert, then threshold 20)
COCO_FROM_BODY25 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)  # MGD's get_coco_body25_mapping
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


# --- CLIP score ------------------------------------------------------------------------------------------------------
@dataclass
class ClipScorer:
    """A CLIP model with its tokenizer and image recipe; `scores` gives 100 x cos(image, caption) per pair."""

    model: torch.nn.Module
    tokenizer: object
    shortest_edge: int
    crop: tuple[int, int]  # height, width
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def pixels(self, image: Image.Image) -> np.ndarray:
        """CLIPImageProcessor's recipe: bicubic resize (shorter side -> shortest_edge), centre crop, /255, normalise;
        float32 (3, crop height, crop width)."""
        width, height = image.size
        size = (self.shortest_edge, int(self.shortest_edge * height / width)) if width <= height else (
            int(self.shortest_edge * width / height), self.shortest_edge)
        if size != image.size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        crop_h, crop_w = self.crop
        top, left = (image.size[1] - crop_h) // 2, (image.size[0] - crop_w) // 2
        array = np.asarray(image.convert("RGB"), dtype=np.float32)[top: top + crop_h, left: left + crop_w] / 255.0
        return ((array - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)).transpose(2, 0, 1)

    @torch.no_grad()
    def scores(self, pixels: torch.Tensor, captions: list[str]) -> np.ndarray:
        """100 x cosine of each image's and its caption's embeddings (torchmetrics' per-pair value, unclamped)."""
        device = next(self.model.parameters()).device
        vision = self.model.vision_model(pixel_values=pixels.to(device))
        image_features = self.model.visual_projection(vision.pooler_output)
        tokens = self.tokenizer(captions, padding=True, return_tensors="pt")
        limit = self.model.config.text_config.max_position_embeddings
        ids, mask = tokens["input_ids"][:, :limit].to(device), tokens["attention_mask"][:, :limit].to(device)
        text = self.model.text_model(input_ids=ids, attention_mask=mask)
        text_features = self.model.text_projection(text.pooler_output)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        return (100 * (image_features * text_features).sum(-1)).float().cpu().numpy()


def _edge(value, key: str) -> int:
    return int(value[key]) if isinstance(value, dict) else int(value)


def load_clip(folder: str | Path, device: str = "cpu") -> ClipScorer:
    """A transformers CLIP folder (config.json + weights, tokenizer files, optionally preprocessor_config.json) as a
    ClipScorer; UserError naming --clip when the folder is missing or does not load."""
    from transformers import CLIPModel, CLIPTokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UserError(f"--clip {folder}: no config.json there; expected a transformers CLIP folder (e.g. a download "
                        "of openai/clip-vit-large-patch14, torchmetrics' default CLIP-S model)")
    try:
        model = CLIPModel.from_pretrained(str(folder)).eval().requires_grad_(False).to(device)
        tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, RuntimeError) as error:  # missing files, foreign configs, misshapen tensors
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"--clip {folder}: not a loadable CLIP model and tokenizer ({first}); expected CLIPModel "
                        "weights with vocab.json and merges.txt") from None
    image_size = int(model.config.vision_config.image_size)
    settings = {}
    if (folder / "preprocessor_config.json").is_file():
        try:
            settings = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise UserError(f"--clip {folder / 'preprocessor_config.json'}: not valid JSON ({error})") from None
    crop = settings.get("crop_size", image_size)
    return ClipScorer(model, tokenizer, _edge(settings.get("size", image_size), "shortest_edge"),
                      (_edge(crop, "height"), _edge(crop, "width")), tuple(settings.get("image_mean", OPENAI_MEAN)),
                      tuple(settings.get("image_std", OPENAI_STD)), str(folder))


def clip_score(per_image: list[float]) -> float | None:
    """torchmetrics' CLIPScore from the per-image 100 x cos values: max(mean, 0); None without images."""
    return max(float(np.mean(per_image)), 0.0) if per_image else None


# --- keypoints -------------------------------------------------------------------------------------------------------
def in_frame(points: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
    """(N, 2) x, y measured in a `frame` (width, height) -> the same points in MGD's 384x512 frame."""
    return np.asarray(points, np.float64)[:, :2] * (FRAME[0] / frame[0], FRAME[1] / frame[1])


def drawn(points: np.ndarray) -> np.ndarray:
    """Which dataset keypoints MGD draws into its pose map: x > 1 and y > 1 (in their own frame)."""
    points = np.asarray(points, np.float64)
    return (points[:, 0] > 1) & (points[:, 1] > 1)


def keypoint_distance(found: np.ndarray, found_present: np.ndarray, reference: np.ndarray,
                      reference_present: np.ndarray) -> tuple[float, int] | None:
    """(mean Euclidean distance, joints compared) over the joints present in both (N, 2) point sets of one frame;
    None when no joint is."""
    both = np.asarray(found_present, bool) & np.asarray(reference_present, bool)
    if not both.any():
        return None
    distances = np.linalg.norm(np.asarray(found, np.float64)[both] - np.asarray(reference, np.float64)[both], axis=1)
    return float(distances.mean()), int(both.sum())


def body25_to_coco(points: np.ndarray) -> np.ndarray:
    """OpenPose BODY_25 joints (25, k) -> the 18 COCO joints (MGD's get_coco_body25_mapping: 8 = mid-hip is dropped)."""
    return np.asarray(points)[list(COCO_FROM_BODY25)]


# --- sketches --------------------------------------------------------------------------------------------------------
def to_frame(image: Image.Image) -> Image.Image:
    """An image at MGD's 384x512 (PIL bicubic when it is another size)."""
    return image if image.size == FRAME else image.resize(FRAME, Image.Resampling.BICUBIC)


def sketch_lines(gray: np.ndarray) -> np.ndarray:
    """Line pixels of an 8-bit sketch (white lines on black, as MGD's im_sketch files and PiDiNet draw them)."""
    return np.asarray(gray) >= SKETCH_LINE


def edge_lines(edges: np.ndarray) -> np.ndarray:
    """Line pixels of a [0, 1] edge map, after the 8-bit rounding a saved sketch goes through."""
    return sketch_lines(np.clip(np.rint(np.asarray(edges, np.float64) * 255), 0, 255))


def read_sketch(path: Path) -> np.ndarray:
    """An input sketch file as line pixels at 384x512; UserError naming the file when it is not a readable image.
    A sketch drawn dark on white (most of it bright: FashionSynth's and `atelier prepare-tryon`'s XDoG sketches) is
    inverted first, so both conventions give the lines."""
    from atelier.data.transforms import open_rgb

    gray = np.asarray(to_frame(open_rgb(path).convert("L")))  # L -> RGB -> L is exact in PIL
    return sketch_lines(255 - gray if np.median(gray) > 127 else gray)


def sketch_distance(lines: np.ndarray, sketch: np.ndarray) -> float | None:
    """Share of pixels, inside the bounding box of the input sketch's lines, where the output's lines and the input
    sketch's differ (0 when they match); None when the input sketch has no line."""
    rows, columns = np.nonzero(sketch)
    if not len(rows):
        return None
    box = (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))
    return float((np.asarray(lines, bool)[box] != np.asarray(sketch, bool)[box]).mean())


def xdog_lines(images: list[Image.Image]) -> list[np.ndarray]:
    """atelier's XDoG line drawings (atelier.utils.xdog, no weights) of 384x512 RGB images, as line pixels."""
    from atelier.utils.xdog import xdog_sketch

    batch = torch.from_numpy(np.stack([np.asarray(image.convert("RGB"), np.float32) for image in images]))
    drawings = xdog_sketch(batch.permute(0, 3, 1, 2) / 127.5 - 1.0)[:, 0].numpy()
    return [edge_lines(drawing) for drawing in drawings]


# --- model files the user brings (OpenPose, PiDiNet) -----------------------------------------------------------------
def onnx_session(path: Path, flag: str):
    """(onnxruntime session, None), or (None, the reason) when onnxruntime is not installed; UserError naming the flag
    when the file does not load."""
    try:
        import onnxruntime
    except ImportError:
        return None, f"{flag} {path.name} is an ONNX file and onnxruntime is not installed (pip install onnxruntime)"
    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]), None
    except Exception as error:  # onnxruntime raises its own exception types for damaged or foreign files
        raise UserError(f"{flag} {path}: onnxruntime cannot load it ({str(error).splitlines()[0][:200]}); expected "
                        "an ONNX model file") from None


def _check_model_file(path: str | Path, flag: str, suffixes: tuple[str, ...]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag} {path}: file not found; pass the model file ({', '.join(suffixes)})")
    if path.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {path}: expected a {' or '.join(suffixes)} file")
    return path


def load_pose_model(path: str | Path, device: str = "cpu"):
    """(keypoint detector, provenance, None) for an OpenPose body model - `body_pose_model.pth` / .safetensors (plain
    torch, weights-only) or an ONNX export whose output with 19 channels holds the heatmaps - or (None, None, reason)
    when it cannot run here (onnxruntime missing)."""
    from atelier import weights
    from atelier.metrics.nets import load_published_weights
    from atelier.metrics.nets.openpose import BodyKeypoints, OpenPoseBody

    path = _check_model_file(path, "--pose-model", (".pth", ".pt", ".safetensors", ".onnx"))
    provenance = f"{path.name} (sha256 {weights.sha256_of(path)[:12]})"
    if path.suffix.lower() == ".onnx":
        session, reason = onnx_session(path, "--pose-model")
        if session is None:
            return None, None, reason
        name = session.get_inputs()[0].name

        def heatmaps_of(prepared: torch.Tensor) -> np.ndarray:
            outputs = session.run(None, {name: prepared.numpy().astype(np.float32)})
            found = [output for output in outputs if output.ndim == 4 and output.shape[1] == 19]
            if not found:
                raise UserError(f"--pose-model {path}: no output with 19 heatmap channels (OpenPose COCO body model); "
                                f"its outputs have shapes {[tuple(o.shape) for o in outputs]}")
            return found[0]

        return BodyKeypoints(heatmaps_of), provenance, None
    network = OpenPoseBody()
    load_published_weights(network, weights.load_state_dict(path), f"--pose-model {path}",
                           layout="OpenPose's COCO body model as pytorch-openpose publishes it (body_pose_model.pth)")
    network = network.eval().requires_grad_(False).to(device)

    @torch.no_grad()
    def torch_heatmaps(prepared: torch.Tensor) -> torch.Tensor:
        return network(prepared.to(device))[1].cpu()

    return BodyKeypoints(torch_heatmaps), provenance, None


def load_sketch_model(path: str | Path):
    """(edge function, provenance, None) for an ONNX edge network (PiDiNet exported to ONNX: input (1, 3, H, W) RGB in
    [0, 1], last output (1, 1, H, W) edges in [0, 1]), or (None, None, reason) when it cannot run here."""
    from atelier import weights

    path = _check_model_file(path, "--sketch-model", (".onnx",))
    session, reason = onnx_session(path, "--sketch-model")
    if session is None:
        return None, None, reason
    name = session.get_inputs()[0].name

    def edges_of(image: Image.Image) -> np.ndarray:
        pixels = np.asarray(image.convert("RGB"), np.float32).transpose(2, 0, 1)[None] / 255.0
        output = session.run(None, {name: pixels})[-1]
        return np.asarray(output, np.float32).reshape(output.shape[-2:])

    return edges_of, f"{path.name} (sha256 {weights.sha256_of(path)[:12]})", None
