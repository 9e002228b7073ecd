"""SSIM and PSNR that equal scikit-image's `structural_similarity` / `peak_signal_noise_ratio`, several times faster.

SSIM (Wang, Bovik, Sheikh & Simoncelli 2004) as scikit-image computes it, per channel then averaged:

- uniform window (`gaussian_weights=False`, e.g. `win_size=51` as CFLD and PIDM use): local means over a box,
  covariances scaled by NP/(NP-1) with `use_sample_covariance=True` (scikit-image's default);
- Gaussian window (`gaussian_weights=True, sigma=s`): scipy's Gaussian truncated at 3.5 sigma (11 taps for sigma
  1.5), usually with `use_sample_covariance=False` (Wang et al.'s original);
- C1 = (0.01 R)^2, C2 = (0.03 R)^2 with R the data range; the SSIM map is averaged after cropping the
  (win - 1) / 2 border - exactly where scikit-image's boundary padding acts - so we only evaluate "valid" positions.

Speed: the per-image work is one compiled pass (numba, `_ssim_kernels.py`): running column sums slide down the
image, each row of valid positions takes its window sums from a prefix sum and evaluates the SSIM formula at once,
so nothing image-sized is ever allocated. Pictures are uint8, so every window sum and every product in the formula
is an integer below 2^53: exact in float64. Float images (PIDM's bilinear resize) take the same kernels. Results
equal scikit-image on float64 input to ~1e-15 (tests/test_metrics_ssim.py). The kernels release the GIL, so the
evaluation's loader threads score several images at once; bench/eval_speed.py measures it against scikit-image.

Measured and dropped on the 2-core CPU box: a batched torch version (float64 separable filters over whole batches,
7x slower than scikit-image, bound by memory traffic) and an integral-image engine in plain numpy (2-3x faster
than scikit-image; the temporaries of its ~20 array calls per image cost more than the arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

TRUNCATE = 3.5  # scikit-image's truncation for the Gaussian window


@dataclass(frozen=True)
class SSIMSettings:
    """One SSIM flavour: window, covariance normalisation, value scale and data range (defaults: Wang et al. 2004)."""

    window: Literal["uniform", "gaussian"] = "gaussian"
    win_size: int = 11  # uniform window side; a Gaussian's follows from sigma
    sigma: float = 1.5
    sample_covariance: bool = False
    scale: float = 1.0  # [0,1] images are multiplied by this first (255 for CFLD's SSIM_256)
    data_range: float | None = 1.0  # None: per image, max - min of the scaled generated image (CFLD's SSIM_256)

    @property
    def size(self) -> int:
        """Window side in pixels (11 for a Gaussian with sigma 1.5)."""
        if self.window == "gaussian":
            return 2 * int(TRUNCATE * self.sigma + 0.5) + 1
        return self.win_size

    def describe(self) -> str:
        """Human-readable settings for reports."""
        if self.window == "uniform":
            window = f"uniform {self.size}x{self.size} window"
        else:
            window = f"Gaussian window sigma {self.sigma:g} ({self.size} taps)"
        covariance = "sample" if self.sample_covariance else "population"
        data_range = "max-min of the generated image" if self.data_range is None else f"{self.data_range:g}"
        return f"{window}, {covariance} covariance, values in [0,{self.scale:g}], data_range {data_range}"


def gaussian_taps(sigma: float) -> np.ndarray:
    """scipy.ndimage's normalised 1-D Gaussian for `sigma`, truncated at 3.5 sigma."""
    radius = int(TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 / sigma**2 * offsets**2)
    return taps / taps.sum()


class SSIMEngine:
    """Several SSIM flavours and PSNR for image pairs of one (C, H, W) shape, uint8 or float in [0, 1].

    Values are handled in "units" of 1/255 (uint8 code values): uint8 input is used as is (exact window sums),
    float input is multiplied by 255 inside the kernels. SSIM does not change when values and data range scale
    together. Holds no per-image state, so one engine may serve several threads.
    """

    def __init__(self, shape: tuple[int, int, int], flavours: Sequence[SSIMSettings], integer: bool) -> None:
        from atelier.metrics import _ssim_kernels  # imports numba (~0.4 s): only when metrics are computed

        channels, height, width = shape
        self.shape, self.flavours, self.integer = tuple(shape), tuple(flavours), integer
        for settings in self.flavours:
            if min(height, width) < settings.size:
                raise ValueError(f"images of {height}x{width} are smaller than the {settings.size}-pixel SSIM window")
        self.unit = 1.0 if integer else 255.0
        self.kernels = _ssim_kernels
        self.taps = {s.sigma: gaussian_taps(s.sigma) for s in self.flavours if s.window == "gaussian"}

    def _prepare(self, image: np.ndarray, name: str) -> np.ndarray:
        """C-contiguous uint8 (integer engine) or float64 array: one compiled specialisation per dtype."""
        if image.shape != self.shape:
            raise ValueError(f"expected {name} of shape {self.shape}, got {image.shape}")
        if not self.integer:
            return np.ascontiguousarray(image, dtype=np.float64)
        if image.dtype != np.uint8:
            raise ValueError(f"this engine was built for uint8 images, got {name} as {image.dtype}; "
                             f"build one with integer=False for float images in [0, 1]")
        return np.ascontiguousarray(image)

    def _ssim(self, settings: SSIMSettings, generated: np.ndarray, reference: np.ndarray) -> float:
        """Mean SSIM of one flavour; constants and data range in units (value 1 of a [0, 1] image = 255)."""
        if settings.data_range is None:  # per image: max - min of the generated image (CFLD's SSIM_256)
            value_range = (float(generated.max()) - float(generated.min())) * self.unit
        else:
            value_range = settings.data_range * 255.0 / settings.scale
        c1, c2 = (0.01 * value_range) ** 2, (0.03 * value_range) ** 2
        points = settings.size**2
        k = points / (points - 1) if settings.sample_covariance else 1.0
        if settings.window == "uniform":
            return self.kernels.uniform_ssim(reference, generated, self.unit, settings.size, k, c1, c2)
        return self.kernels.gaussian_ssim(reference, generated, self.unit, self.taps[settings.sigma], k, c1, c2)

    def __call__(self, generated: np.ndarray, reference: np.ndarray) -> tuple[list[float], float]:
        """SSIM for every flavour and PSNR (data range 1) of one (C, H, W) pair: uint8, or float in [0, 1]."""
        generated, reference = self._prepare(generated, "generated"), self._prepare(reference, "reference")
        scores = [self._ssim(settings, generated, reference) for settings in self.flavours]
        squared_error = self.kernels.squared_error(reference, generated, self.unit)
        if squared_error == 0:
            return scores, float("inf")
        return scores, float(10 * np.log10(255.0**2 * generated.size / squared_error))


def _as_numpy(images) -> np.ndarray:
    array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    return array[None] if array.ndim == 3 else array


def pair_metrics(generated, reference, flavours: Sequence[SSIMSettings]) -> tuple[np.ndarray, np.ndarray]:
    """SSIM (one column per flavour) and PSNR for (N, C, H, W) batches: uint8, or float in [0, 1]."""
    generated, reference = _as_numpy(generated), _as_numpy(reference)
    if generated.shape != reference.shape:
        raise ValueError(f"generated {generated.shape} and reference {reference.shape} batches differ in shape")
    integer = generated.dtype == np.uint8 and reference.dtype == np.uint8
    if not integer:
        generated, reference = generated.astype(np.float64, copy=False), reference.astype(np.float64, copy=False)
    engine = SSIMEngine(generated.shape[1:], flavours, integer)
    ssim_values = np.empty((len(generated), len(flavours)))
    psnr_values = np.empty(len(generated))
    for index in range(len(generated)):
        scores, psnr_values[index] = engine(generated[index], reference[index])
        ssim_values[index] = scores
    return ssim_values, psnr_values


def ssim(generated, reference, settings: SSIMSettings = SSIMSettings()) -> np.ndarray:
    """Per-image mean SSIM of (N, C, H, W) batches, equal to scikit-image's structural_similarity(channel_axis=0)."""
    return pair_metrics(generated, reference, [settings])[0][:, 0]


def psnr(generated, reference) -> np.ndarray:
    """Per-image PSNR in dB (data range 1) of (N, C, H, W) batches, as scikit-image's peak_signal_noise_ratio."""
    return pair_metrics(generated, reference, [])[1]
