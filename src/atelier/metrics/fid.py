"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) from streamed Inception-v3 features, with cached real-set statistics.

Input conventions (`InputMode`), applied on the device to a batch of images:

- "cfld": [0,1] images, bilinear resize to 299 (align_corners=False), then per channel
  x * (std / 0.5) + (mean - 0.5) / 0.5 with ImageNet mean/std: torchvision's `transform_input`, which expects
  ImageNet-normalised input but receives [0,1] in CFLD/PIDM/MCLD (a quirk reproduced for comparable numbers);
- "pytorch_fid": [0,1] images, bilinear resize to 299 (align_corners=False), then 2x - 1 (pytorch-fid);
- "clean": images already resized to 299 by `images.clean_resize_299`, in [0,255], then (x - 128) / 128 (clean-fid).

Streaming: `FeatureStats` keeps float64 running sums of x and x x^T (2048 + 2048^2 numbers, 32 MiB) however many
images pass, so memory does not grow with the set; the covariance is (S - n mu mu^T) / (n - 1), as numpy.cov.
KID needs the features themselves: a seeded reservoir sample (Vitter's algorithm R) keeps at most
`kid_capacity` feature vectors (default 10,000 = 80 MiB in float32); KID subsets are drawn from it, which is a
uniform sample of the set, so the estimate is unbiased; sets smaller than the capacity are kept whole.

Fréchet distance: pytorch-fid's `calculate_frechet_distance` (scipy sqrtm of sigma1 sigma2; when that is not
finite, 1e-6 is added to both diagonals; the real part is kept when the imaginary one is below 1e-3), or
method="eigh": the same trace from the symmetric matrix sqrt(S1) S2 sqrt(S1) by eigendecomposition (5x faster,
equal to ~1e-9 relative on non-singular products).
KID: clean-fid's estimator: polynomial kernel (x.y / d + 1)^3, `subsets` subsets of min(n1, n2, subset_size)
vectors drawn without replacement, unbiased MMD^2 averaged; reported raw (multiply by 1000 for "KID x 1000").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from atelier import weights
from atelier.metrics.nets import randomize
from atelier.metrics.nets.inception import FEATURE_DIM, inception_features

logger = logging.getLogger(__name__)

InputMode = Literal["cfld", "pytorch_fid", "clean"]
NetworkName = Literal["inception_torchvision", "inception_fid"]
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class InceptionFeatureExtractor(torch.nn.Module):
    """An Inception-v3 trunk plus one protocol's input convention: images in -> (N, 2048) float32 features out."""

    def __init__(self, trunk: torch.nn.Module, mode: InputMode) -> None:
        super().__init__()
        self.trunk, self.mode = trunk, mode
        scale = torch.tensor([s / 0.5 for s in _IMAGENET_STD]).view(1, 3, 1, 1)
        offset = torch.tensor([(m - 0.5) / 0.5 for m in _IMAGENET_MEAN]).view(1, 3, 1, 1)
        self.register_buffer("quirk_scale", scale)
        self.register_buffer("quirk_offset", offset)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float()
        if self.mode == "clean":
            x = (images - 128.0) / 128.0
        else:
            x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
            x = x * self.quirk_scale + self.quirk_offset if self.mode == "cfld" else 2 * x - 1
        return self.trunk(x)


def build_inception(
    network: NetworkName, mode: InputMode, weights_dir=None, allow_random: bool = False, seed: int = 0
) -> tuple[InceptionFeatureExtractor, str]:
    """Inception-v3 with published weights (or seeded random ones when allowed and missing), plus provenance."""
    variant = "torchvision" if network == "inception_torchvision" else "fid"
    try:
        path = weights.resolve(network, weights_dir)
        trunk = inception_features(variant, weights.load_state_dict(path), source=str(path))
        provenance = f"{path.name} (sha256 {weights.sha256_of(path)[:12]})"
    except weights.WeightsUnavailable:
        if not allow_random:
            raise
        trunk = randomize(inception_features(variant), seed)
        provenance = f"RANDOM (seed {seed})"
        logger.warning("%s missing, using random weights (--allow-random-weights)", network)
    return InceptionFeatureExtractor(trunk, mode).eval(), provenance


class FeatureStats:
    """Streaming mean/covariance accumulator (float64) with an optional bounded reservoir of features for KID."""

    def __init__(self, dim: int = FEATURE_DIM, kid_capacity: int = 0, seed: int = 0) -> None:
        self.dim, self.count = dim, 0
        # float64 sums live on the features' device (a GPU keeps the 2048 x 2048 update there)
        self._total = torch.zeros(dim, dtype=torch.float64)
        self._outer = torch.zeros(dim, dim, dtype=torch.float64)
        self.kid_capacity = kid_capacity
        self.reservoir = np.zeros((0, dim), np.float32)
        self._rng = np.random.default_rng(seed)

    @property
    def total(self) -> np.ndarray:
        return self._total.cpu().numpy()

    @property
    def outer(self) -> np.ndarray:
        return self._outer.cpu().numpy()

    def add(self, features: torch.Tensor) -> None:
        """Fold a (B, dim) batch in."""
        doubles = features.detach().to(torch.float64)
        if self._outer.device != doubles.device:
            self._total, self._outer = self._total.to(doubles.device), self._outer.to(doubles.device)
        self._total += doubles.sum(dim=0)
        self._outer += doubles.T @ doubles
        if self.kid_capacity:
            self._sample(features.detach().float().cpu().numpy())
        self.count += features.shape[0]

    def _sample(self, batch: np.ndarray) -> None:
        seen = self.count
        room = self.kid_capacity - len(self.reservoir)
        if room > 0:
            self.reservoir = np.concatenate([self.reservoir, batch[:room]])
            batch, seen = batch[room:], seen + min(room, len(batch))
        for row in batch:  # algorithm R: keep the new item with probability capacity / (seen + 1)
            slot = self._rng.integers(0, seen + 1)
            if slot < self.kid_capacity:
                self.reservoir[slot] = row
            seen += 1

    def __getstate__(self) -> dict:  # pickled to gather across ranks: move the sums to the CPU first
        state = dict(self.__dict__)
        state["_total"], state["_outer"] = self._total.cpu(), self._outer.cpu()
        return state

    def merge(self, other: "FeatureStats") -> None:
        """Combine with statistics gathered elsewhere (another rank); reservoirs are pooled and re-sampled."""
        self._total = self._total.cpu() + other._total.cpu()
        self._outer = self._outer.cpu() + other._outer.cpu()
        pooled = np.concatenate([self.reservoir, other.reservoir])
        if self.kid_capacity and len(pooled) > self.kid_capacity:
            pooled = pooled[self._rng.choice(len(pooled), self.kid_capacity, replace=False)]
        self.reservoir = pooled
        self.count += other.count

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (as numpy.cov with rowvar=False)."""
        if self.count < 2:
            raise ValueError(f"FID needs at least 2 images per set, got {self.count}")
        mu = self.total / self.count
        sigma = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return mu, sigma

    def save(self, path: Path) -> None:
        """Write mu, sigma, count, the raw sums and the KID reservoir to an .npz atomically."""
        from atelier.utils.io import atomic_path

        mu, sigma = self.mean_cov()
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, mu=mu, sigma=sigma, count=self.count, total=self.total, outer=self.outer,
                         reservoir=self.reservoir, kid_capacity=self.kid_capacity)

    @classmethod
    def load(cls, path: Path) -> "FeatureStats":
        """Read statistics written by `save`."""
        with np.load(path) as data:
            stats = cls(int(data["total"].shape[0]), int(data["kid_capacity"]))
            stats._total, stats._outer = torch.from_numpy(data["total"]), torch.from_numpy(data["outer"])
            stats.count, stats.reservoir = int(data["count"]), data["reservoir"]
        return stats


def frechet_distance(mu1, sigma1, mu2, sigma2, method: Literal["sqrtm", "eigh"] = "sqrtm", eps: float = 1e-6) -> float:
    """Fréchet distance between two Gaussians, as pytorch-fid (sqrtm, 1e-6 offset if singular) or by eigh."""
    import scipy.linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    if method == "eigh":
        # torch's LAPACK honours torch.set_num_threads (numpy's OpenBLAS threads can thrash on shared machines)
        s1, s2 = torch.from_numpy(np.asarray(sigma1, np.float64)), torch.from_numpy(np.asarray(sigma2, np.float64))
        values, vectors = torch.linalg.eigh(s1)
        root = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
        product = torch.linalg.eigvalsh(root @ s2 @ root)
        trace_covmean = float(product.clamp_min(0).sqrt().sum())
    else:
        covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            logger.info("fid: singular product; adding %g to the diagonal of both covariances", eps)
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise ValueError(f"fid: imaginary component {np.max(np.abs(covmean.imag))} in the matrix square root")
            covmean = covmean.real
        trace_covmean = float(np.trace(covmean))
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean)


def kernel_inception_distance(
    features1: np.ndarray, features2: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID as clean-fid/torch-fidelity: mean and std over subsets of the unbiased polynomial-kernel MMD^2."""
    features1 = np.asarray(features1, np.float64)
    features2 = np.asarray(features2, np.float64)
    dim = features1.shape[1]
    m = min(len(features1), len(features2), subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(features1)} and {len(features2)}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = features2[rng.choice(len(features2), m, replace=False)]
        y = features1[rng.choice(len(features1), m, replace=False)]
        within = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
        between = (x @ y.T / dim + 1) ** 3
        values.append(((within.sum() - np.diag(within).sum()) / (m - 1) - between.sum() * 2 / m) / m)
    return float(np.mean(values)), float(np.std(values))


def stats_cache_path(files: list[Path], identity: dict) -> Path:
    """Cache file for a real set: keyed by the sorted file list (name, size, mtime) and everything in `identity`."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    name = f"{identity.get('protocol', 'set')}-{identity.get('key', 'fid')}-{digest.hexdigest()[:20]}.npz"
    return weights.cache_root() / "stats" / name


def cache_enabled() -> bool:
    """Real-set statistics caching is on unless ATELIER_NO_STATS_CACHE=1."""
    return os.environ.get("ATELIER_NO_STATS_CACHE", "") in ("", "0")
