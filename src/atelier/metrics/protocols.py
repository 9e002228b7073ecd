"""The named evaluation protocols of `atelier evaluate`: each paper's exact preprocessing and metric settings.

`cfld` - pose-guided synthesis as CFLD (CVPR 2024, github.com/YanzuoLu/CFLD `models/metrics.py`,
`pose_transfer_test.py`) computes it; MCLD (CVPR 2025) reuses that code.
  - test size 256x176 (or 512x352); ground truth: the target image, PIL bicubic (torchvision `Resize` on PIL) to it;
  - generated image: torch bicubic+antialias resize to the test size when needed, x255, clamp, cast to uint8
    (truncation), back to [0,1]; images stored at the test size are used as they are;
  - `ssim`: scikit-image `structural_similarity(data_range=1, win_size=51, channel_axis=0)` (uniform 51x51
    window, sample covariance) on [0,1]; `ssim_256`: Gaussian sigma 1.5, population covariance, on [0,255] values,
    data_range = max - min of the generated image; `psnr`: data_range 1, mean over images;
  - `lpips`: LPIPS v0.1 AlexNet, [0,1] inputs mapped to [-1,1];
  - `fid`: torchvision Inception-v3 (`inception_v3_google-0cc3c7bd.pth`), pooled 2048-d features after Mixed_7c,
    bilinear resize to 299, then torchvision's ImageNet `transform_input` applied to [0,1] input (the quirk);
    real set = ALL training images (`--real train_highres/`), PIL bicubic to the test size; Fréchet distance as
    pytorch-fid (1e-6 diagonal offset if the product is singular);
  - `fid_pytorch_fid`: the standard FID (pytorch-fid Inception, 2x-1 input) on the same images, for reference only.

`mcld` - MCLD (CVPR 2025): `cfld` exactly (MCLD reuses CFLD's code) plus its face-identity score, on the pairs where
both output and ground truth give a face at the test size: `face_cos` (mean cosine similarity of the raw ArcFace
embeddings), `face_dist` (mean Euclidean distance of them) and `face_pairs` (how many pairs); needs `--face-model`
(MCLD uses insightface's buffalo_s), landmarks from `--face-detector` or the target pose's `--face-keypoints`; see
atelier.metrics.face.

`pidm` - PIDM (CVPR 2023, github.com/ankanbhunia/PIDM `utils/metrics.py`, `data/prepare_data.py`).
  - every image (generated, ground truth, real) is brought to a side x side square by PIL bicubic (PIDM stores
    256x256 PNGs) unless it already has the test size or the square size, then resized to the test size (176x256)
    with OpenCV-style bilinear on floats (emulated with torch bilinear, align_corners=False: the same sampling grid
    as cv2.INTER_LINEAR; see `atelier.metrics.images`); values stay float in [0,1];
  - `ssim`: old `compare_ssim(win_size=51, multichannel=True, data_range=1)` - uniform 51 window, sample covariance,
    computed in float64 as that old version did; `ssim_256`: PIDM's script variant, Gaussian sigma 1.2 on [0,255];
  - `psnr`, `lpips` (AlexNet v0.1), `fid` (torchvision Inception with the transform_input quirk, as CFLD) against
    the real set (`--real`: training images), `fid_pytorch_fid` for reference.
  - Not reproduced: PIDM's FID script drops the last partial batch of 64 images; we use every image.

`standard` - what generic image-synthesis papers report.
  - images resized with PIL bicubic to the test size (only when needed);
  - `ssim`: Gaussian window sigma 1.5 (11 taps), population covariance, data_range 1 (Wang et al. 2004);
  - `psnr`; `lpips` (AlexNet) and `lpips_vgg` (VGG16), v0.1;
  - `fid` and `kid_x1000` with the pytorch-fid Inception (`pt_inception-2015-12-05-6726825d.pth`, FIDInceptionA/C/E
    blocks), bilinear resize to 299 and 2x-1 (pytorch-fid); KID as clean-fid/torch-fidelity (100 subsets of
    min(n, 1000), polynomial kernel degree 3), reported x1000; real set = `--real`, else the ground-truth folder.

`vitonhd` - virtual try-on, LaDI-VTON convention (ACM MM 2023, github.com/miccunifi/ladi-vton `src/utils/val_metrics.py`).
  - `--setting paired`: generated images named like their `test/image` person; `ssim` (torchmetrics SSIM,
    data_range 1: Gaussian sigma 1.5, population covariance - identical to scikit-image's) and `lpips` (AlexNet)
    on both images resized to 512x384 with PIL bilinear (torchvision `Resize` on PIL);
  - both settings: `fid` and `kid_x1000` as clean-fid mode "clean": each image at its stored size, per-channel
    float PIL bicubic to 299x299, (x - 128) / 128, the pytorch-fid port of the TF FID Inception; real set =
    `--ground-truth` (`test/image`). KID is reported x1000 (papers differ between x100 and x1000: check).
`dresscode` - virtual try-on on DressCode as LaDI-VTON evaluates it (`src/utils/val_metrics.py`,
`generate_fid_stats.py`, `image_from_pipe.py`): the same metrics and settings as `vitonhd`, per category and over all.
  - generated images in `<category>/<X_0>.(jpg|png)` (LaDI-VTON saves `<out>/<category>/<im_name>`); `--category`
    picks categories, else every category folder present is scored (LaDI-VTON's `all`);
  - ground truth `<DressCode>/<category>/images/X_0.jpg` of the category's test persons (the first column of
    `test_pairs_paired.txt`, whose images LaDI-VTON copies to build each category's clean-fid statistics, in both
    settings); per category: `ssim`, `lpips` (paired), `fid`, `kid_x1000` against that category's persons; over all:
    the mean SSIM/LPIPS over every image and FID/KID of all outputs against all persons (its `dresscode_all` stats).

`mgd` - multimodal garment design as MGD (Baldrati et al., ICCV 2023, github.com/aimagelab/multimodal-garment-designer)
evaluates it. Its release ships no metric code (`src/eval.py` only generates images), so what follows is built from
its README's pinned environment (clean-fid 0.1.35, torchmetrics 0.11), its dataset code (captions, sketches, keypoints)
and the paper's description; each label says which parts are our reading (see atelier.metrics.garment).
  - generated images named like their person (`<person stem>.jpg`, as its eval.py writes `images/<im_name>`), on the
    VITON-HD or DressCode multimodal layout (`--data`), pairs of `--setting` (VITON-HD paired = own garment);
  - `fid`, `kid_x1000`: clean-fid "clean" against the listed test persons' images (or `--real`);
  - `clip_score`: torchmetrics CLIPScore with the `--clip` model; text = MGD's `", ".join(noun phrases)` of the
    garment (captions.json ids with >= 3 phrases; DressCode: fine captions with >= 3, then the coarse ones);
  - `pose_distance` (needs `--pose-model`, an OpenPose body model) and `sketch_distance` (needs `--sketch-model`, a
    PiDiNet ONNX export): MGD's PD and SD by our reading; `pose_distance_keypoints` (output keypoints from
    `--keypoints`) and `sketch_distance_xdog` (atelier's weight-free XDoG edges) are labelled variants, not MGD's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Literal

import numpy as np
from PIL import Image

from atelier.errors import UserError
from atelier.metrics.face import FACE_KEYS, FACE_LABELS
from atelier.metrics.fid import InputMode, NetworkName
from atelier.metrics.images import cfld_generated, pidm_image, pil_resize
from atelier.metrics.ssim import SSIMSettings

Prepare = Callable[[Image.Image, tuple[int, int]], np.ndarray]


@dataclass(frozen=True)
class FeatureSpec:
    """One Inception-feature metric: which network, which input convention, which image view, KID or not."""

    key: str
    network: NetworkName
    mode: InputMode
    label: str
    kid: bool = False

    @property
    def view(self) -> Literal["test_size", "clean299"]:
        """The image form the network is fed: the protocol's test-size image, or clean-fid's 299x299 resize."""
        return "clean299" if self.mode == "clean" else "test_size"


@dataclass(frozen=True)
class Protocol:
    """A named protocol: how each image set is prepared and which metrics, with which settings, are reported."""

    name: str
    title: str
    source: str
    default_size: tuple[int, int]
    generated: Prepare
    ground_truth: Prepare
    real: Prepare
    ssim: dict[str, SSIMSettings]
    psnr: bool
    lpips: dict[str, str]  # report key -> backbone ("alex" / "vgg")
    features: tuple[FeatureSpec, ...]
    real_default: Literal["required", "ground_truth"]
    settings: tuple[str, ...] = ("paired",)
    face: bool = False  # MCLD's face-identity keys (atelier.metrics.face) after the others, paired only

    def metric_keys(self, setting: str) -> list[str]:
        """Report keys in display order for a setting ('paired' or 'unpaired')."""
        keys = [] if setting == "unpaired" else list(self.ssim) + (["psnr"] if self.psnr else []) + list(self.lpips)
        for spec in self.features:
            keys += [spec.key] + (["kid_x1000"] if spec.kid else [])
        if self.face and setting == "paired":
            keys += list(FACE_KEYS)
        return keys


def _bicubic(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return pil_resize(image, size, "bicubic")


def _bilinear(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return pil_resize(image, size, "bilinear")


UNIFORM_51 = SSIMSettings(window="uniform", win_size=51, sample_covariance=True)
GAUSSIAN_15 = SSIMSettings(window="gaussian", sigma=1.5, sample_covariance=False)
_FID_STANDARD_LABEL = "FID, pytorch-fid Inception (standard; not the number the paper reports)"
_CFLD_FID_LABEL = "FID, torchvision Inception-v3 with the transform_input quirk (as the paper)"
# pose protocols (cfld, pidm): the paper's FID, and the standard one beside it for reference
_POSE_FEATURES = (
    FeatureSpec("fid", "inception_torchvision", "cfld", _CFLD_FID_LABEL),
    FeatureSpec("fid_pytorch_fid", "inception_fid", "pytorch_fid", _FID_STANDARD_LABEL),
)

PROTOCOLS: dict[str, Protocol] = {
    "cfld": Protocol(
        name="cfld",
        title="Pose-guided synthesis, CFLD/MCLD protocol",
        source="github.com/YanzuoLu/CFLD models/metrics.py, pose_transfer_test.py",
        default_size=(256, 176),
        generated=cfld_generated,
        ground_truth=_bicubic,
        real=_bicubic,
        ssim={"ssim": UNIFORM_51, "ssim_256": SSIMSettings(window="gaussian", sigma=1.5, scale=255.0, data_range=None)},
        psnr=True,
        lpips={"lpips": "alex"},
        features=_POSE_FEATURES,
        real_default="required",
    ),
    "pidm": Protocol(
        name="pidm",
        title="Pose-guided synthesis, PIDM protocol",
        source="github.com/ankanbhunia/PIDM utils/metrics.py, data/prepare_data.py",
        default_size=(256, 176),
        generated=pidm_image,
        ground_truth=pidm_image,
        real=pidm_image,
        ssim={"ssim": UNIFORM_51, "ssim_256": SSIMSettings(window="gaussian", sigma=1.2, scale=255.0, data_range=None)},
        psnr=True,
        lpips={"lpips": "alex"},
        features=_POSE_FEATURES,
        real_default="required",
    ),
    "standard": Protocol(
        name="standard",
        title="Standard image-synthesis metrics",
        source="Wang et al. 2004 (SSIM), Zhang et al. 2018 (LPIPS), pytorch-fid, clean-fid/torch-fidelity (KID)",
        default_size=(256, 176),
        generated=_bicubic,
        ground_truth=_bicubic,
        real=_bicubic,
        ssim={"ssim": GAUSSIAN_15},
        psnr=True,
        lpips={"lpips": "alex", "lpips_vgg": "vgg"},
        features=(FeatureSpec("fid", "inception_fid", "pytorch_fid", "FID, pytorch-fid Inception", kid=True),),
        real_default="ground_truth",
    ),
    "vitonhd": Protocol(
        name="vitonhd",
        title="Virtual try-on, LaDI-VTON convention",
        source="github.com/miccunifi/ladi-vton src/utils/val_metrics.py (torchmetrics SSIM/LPIPS, clean-fid FID/KID)",
        default_size=(512, 384),
        generated=_bilinear,
        ground_truth=_bilinear,
        real=_bilinear,
        ssim={"ssim": GAUSSIAN_15},
        psnr=False,
        lpips={"lpips": "alex"},
        features=(FeatureSpec("fid", "inception_fid", "clean", "FID, clean-fid 'clean' (pytorch-fid Inception)", kid=True),),
        real_default="ground_truth",
        settings=("paired", "unpaired"),
    ),
}
# MCLD reuses CFLD's metric code and adds the face score: the cfld protocol with the face keys, not a copy of it
PROTOCOLS["mcld"] = replace(
    PROTOCOLS["cfld"],
    name="mcld",
    title="Pose-guided synthesis, MCLD protocol (CFLD's metrics plus the face-identity score)",
    source="github.com/YanzuoLu/CFLD models/metrics.py (as MCLD reuses it) plus MCLD's face score: insightface "
           "ArcFace embeddings, cosine similarity and Euclidean distance",
    face=True,
)


_CLEAN_FID = FeatureSpec("fid", "inception_fid", "clean", "FID, clean-fid 'clean' (pytorch-fid Inception)", kid=True)
# protocols that read a dataset layout (atelier.metrics.tryon, atelier.metrics.mgd), not two image folders
LAYOUT_PROTOCOLS: dict[str, Protocol] = {
    "dresscode": Protocol(
        name="dresscode",
        title="Virtual try-on on DressCode, LaDI-VTON convention, per category",
        source="github.com/miccunifi/ladi-vton src/utils/val_metrics.py, generate_fid_stats.py (per-category clean-fid "
               "stats), torchmetrics SSIM/LPIPS",
        default_size=(512, 384),
        generated=_bilinear,
        ground_truth=_bilinear,
        real=_bilinear,
        ssim={"ssim": GAUSSIAN_15},
        psnr=False,
        lpips={"lpips": "alex"},
        features=(_CLEAN_FID,),
        real_default="ground_truth",
        settings=("paired", "unpaired"),
    ),
    "mgd": Protocol(
        name="mgd",
        title="Multimodal garment design, MGD protocol",
        source="github.com/aimagelab/multimodal-garment-designer (no metric code released: its pinned clean-fid and "
               "torchmetrics, its dataset code, the paper's metric description)",
        default_size=(512, 384),
        generated=_bilinear,
        ground_truth=_bilinear,
        real=_bilinear,
        ssim={},
        psnr=False,
        lpips={},
        features=(FeatureSpec("fid", "inception_fid", "clean", "FID, clean-fid 'clean' (MGD pins clean-fid 0.1.35), "
                              "against the listed test persons' images", kid=True),),
        real_default="ground_truth",
        settings=("paired", "unpaired"),
    ),
}
MGD_KEYS = ("clip_score", "pose_distance", "pose_distance_keypoints", "sketch_distance", "sketch_distance_xdog")
MGD_LABELS = {
    "clip_score": "CLIP-S as torchmetrics CLIPScore (MGD pins torchmetrics 0.11): max(0, mean of 100 cos(image, "
                  "caption)); caption = MGD's ', '.join of the garment's noun phrases; CLIP model from --clip",
    "pose_distance": "MGD's pose distance, our reading (no code released): mean distance (px at 384x512) between the "
                     "OpenPose body keypoints of the output (--pose-model; strongest peak per joint) and the dataset's, "
                     "over joints present in both, averaged over outputs",
    "pose_distance_keypoints": "NOT MGD's PD: pose_distance with the output keypoints read from --keypoints (OpenPose "
                               "JSON from your own detector run)",
    "sketch_distance": "MGD's sketch distance, our reading (no code released): share of pixels inside the input "
                       "sketch's bounding box (384x512) where the output's PiDiNet edges (--sketch-model) and the input "
                       "sketch differ, both binarised as MGD binarises its sketch (8-bit value > 234)",
    "sketch_distance_xdog": "NOT MGD's SD: sketch_distance with atelier's weight-free XDoG edges (atelier.utils.xdog) "
                            "in place of PiDiNet",
}

def get_protocol(name: str) -> Protocol:
    """Look up a protocol by name, with the list of valid names in the error."""
    if name not in PROTOCOLS:
        raise UserError(f"--protocol {name!r}: unknown; expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def metric_label(protocol: Protocol, key: str) -> str:
    """A one-line description of a report key under a protocol (settings included)."""
    if key in protocol.ssim:
        return f"SSIM: {protocol.ssim[key].describe()}"
    if key == "psnr":
        return "PSNR (dB), data_range 1, mean over images"
    if key in protocol.lpips:
        return f"LPIPS v0.1, {'AlexNet' if protocol.lpips[key] == 'alex' else 'VGG16'} backbone, inputs [0,1] -> [-1,1]"
    if key == "kid_x1000":
        return "KID x 1000 (polynomial kernel, 100 subsets of <= 1000), mean over subsets"
    for spec in protocol.features:
        if spec.key == key:
            return spec.label
    if key in MGD_LABELS:
        return MGD_LABELS[key]
    if key in FACE_LABELS:
        return FACE_LABELS[key]
    if "/" in key:  # a per-category key of a layout protocol: ssim/upper_body
        base, category = key.split("/", 1)
        return f"{metric_label(protocol, base)}; {category} only"
    return key
