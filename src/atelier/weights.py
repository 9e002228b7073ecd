"""Where network weights come from: a --weights-dir, the cache folder, or a download, always sha256-checked.

Search order for a known file (see `KNOWN_WEIGHTS`):

1. `weights_dir/<file name>` when a folder is given (`atelier evaluate --weights-dir DIR`);
2. the cache folder `<cache root>/weights/<file name>`, where the cache root is `$ATELIER_CACHE` when set, else
   `~/.cache/atelier` (real-set statistics live beside it in `<cache root>/stats`);
3. a download from the file's canonical address into the cache folder, unless `ATELIER_OFFLINE=1` is set.

Every file is checked against its sha256 before use: the full digest where it is pinned, else the digest prefix
that the publisher put in the file name (torchvision and pytorch-fid name files `<name>-<first 8 hex of sha256>.pth`;
torchvision's own `check_hash` checks exactly that prefix). Weights are only ever read with
`torch.load(weights_only=True)` or safetensors, never unpickled freely.

A file that cannot be found or fetched raises ONE `WeightsUnavailable` (a `UserError`) naming the file, its canonical
address and where to put it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from atelier.errors import UserError
from atelier.utils.io import atomic_path

logger = logging.getLogger(__name__)


class WeightsUnavailable(UserError):
    """A weights file is missing and could not be downloaded (offline, or the download failed)."""


@dataclass(frozen=True)
class WeightFile:
    """One published weights file: its name, canonical address and expected sha256 (full digest or prefix)."""

    key: str
    filename: str
    url: str
    sha256_prefix: str
    description: str
    sha256: str | None = None  # full digest, pinned only where verified
    package_path: tuple[str, str] | None = None  # (python package, path inside it) shipping the file


KNOWN_WEIGHTS: dict[str, WeightFile] = {
    spec.key: spec
    for spec in (
        WeightFile(
            "alexnet",
            "alexnet-owt-7be5be79.pth",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "7be5be79",
            "torchvision AlexNet ImageNet weights (LPIPS-alex backbone)",
        ),
        WeightFile(
            "vgg16",
            "vgg16-397923af.pth",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "397923af",
            "torchvision VGG16 ImageNet weights (LPIPS-vgg backbone)",
        ),
        WeightFile(
            "inception_torchvision",
            "inception_v3_google-0cc3c7bd.pth",
            "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
            "0cc3c7bd",
            "torchvision Inception-v3 ImageNet weights (FID as in CFLD/PIDM/MCLD)",
        ),
        WeightFile(
            "inception_fid",
            "pt_inception-2015-12-05-6726825d.pth",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
            "6726825d",
            "pytorch-fid Inception-v3 (the TF FID Inception ported to PyTorch; standard FID/KID)",
        ),
        WeightFile(
            "lpips_alex",
            "alex.pth",
            "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
            "df73285e",
            "LPIPS v0.1 linear layers for AlexNet (shipped by torchmetrics)",
            sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
            package_path=("torchmetrics", "functional/image/lpips_models/alex.pth"),
        ),
        WeightFile(
            "lpips_vgg",
            "vgg.pth",
            "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
            "a78928a0",
            "LPIPS v0.1 linear layers for VGG16 (shipped by torchmetrics)",
            sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
            package_path=("torchmetrics", "functional/image/lpips_models/vgg.pth"),
        ),
    )
}


def cache_root() -> Path:
    """The atelier cache root: $ATELIER_CACHE, else ~/.cache/atelier."""
    env = os.environ.get("ATELIER_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "atelier"


def weights_cache_dir() -> Path:
    """Folder where downloaded weights are kept: <cache root>/weights."""
    return cache_root() / "weights"


def offline() -> bool:
    """True when ATELIER_OFFLINE (or HF_HUB_OFFLINE) asks for no download attempts."""
    return any(os.environ.get(name, "") not in ("", "0") for name in ("ATELIER_OFFLINE", "HF_HUB_OFFLINE"))


_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 digest of a file, read in 1 MiB blocks (remembered per path, size and mtime)."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def verify(path: Path, spec: WeightFile) -> str:
    """Check a file's sha256 against the spec (full digest when pinned, else the published prefix); return the digest."""
    digest = sha256_of(path)
    expected = spec.sha256 or spec.sha256_prefix
    if not digest.startswith(expected):
        raise UserError(
            f"weights file {path} has sha256 {digest[:16]}..., expected {expected[:16]}... for {spec.filename}: "
            f"the file is corrupt or a different file; delete it and fetch it again from {spec.url}"
        )
    return digest


def _package_file(spec: WeightFile) -> Path | None:
    if spec.package_path is None:
        return None
    package, inner = spec.package_path
    try:
        module = __import__(package)
    except ImportError:
        return None
    candidate = Path(module.__file__).parent / inner
    return candidate if candidate.is_file() else None


def _download(spec: WeightFile, target: Path, timeout: float = 30.0) -> None:
    logger.info("downloading %s from %s", spec.filename, spec.url)
    with atomic_path(target) as tmp:
        with urllib.request.urlopen(spec.url, timeout=timeout) as response, open(tmp, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
        verify(tmp, spec)


def resolve(spec: WeightFile | str, weights_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Find (or download into the cache) a known weights file and verify its sha256; raise WeightsUnavailable if absent."""
    spec = KNOWN_WEIGHTS[spec] if isinstance(spec, str) else spec
    candidates = []
    if weights_dir is not None:
        candidates.append(Path(weights_dir).expanduser() / spec.filename)
    candidates.append(weights_cache_dir() / spec.filename)
    packaged = _package_file(spec)
    if packaged is not None:
        candidates.append(packaged)
    for candidate in candidates:
        if candidate.is_file():
            verify(candidate, spec)
            return candidate
    target = weights_cache_dir() / spec.filename
    failure = "offline (ATELIER_OFFLINE is set)" if offline() or not download else ""
    if not failure:
        try:
            _download(spec, target)
            return target
        except UserError:
            raise
        except Exception as error:  # network errors come in many types (URLError, timeout, SSL, HTTP)
            failure = f"download failed: {type(error).__name__}: {error}"
    searched = ", ".join(str(c.parent) for c in candidates)
    raise WeightsUnavailable(
        f"missing weights file {spec.filename} ({spec.description}): not found in {searched}; {failure}. "
        f"Fetch it from {spec.url} on a machine with network access and put it in {weights_cache_dir()} "
        f"(or in a folder passed as --weights-dir)"
    )


def _first_line(error: BaseException) -> str:
    """The first line of an error message (torch's unpickling errors run to a page), for one-line messages."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def load_state_dict(path: str | os.PathLike) -> dict:
    """Load a state dict safely: safetensors, or torch.load(weights_only=True) on CPU; unwrap a 'state_dict' key."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as error:  # SafetensorError, OSError: a damaged file, or a pickle renamed .safetensors
            raise UserError(f"weights file {path} is not a readable safetensors file ({_first_line(error)}); it is "
                            "damaged or another format: fetch or convert it again") from None
    try:
        with warnings.catch_warnings():  # a pickle not written by torch.save: the error below says all there is to say
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler refuses anything but tensors and containers
        raise UserError(f"weights file {path} pickles Python objects other than tensors: refused by the weights-only "
                        "loader (unpickling them could run code); expected a .pth/.safetensors state dict as published") from None
    except Exception as error:  # truncated, not a torch file, unreadable
        raise UserError(f"cannot read weights file {path} as a weights-only torch state dict ({_first_line(error)}); "
                        "expected a .pth/.safetensors state dict as published") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"weights file {path} holds a {type(state).__name__}, expected a state dict (name -> tensor)")
    return dict(state)


def load_module_strict(module, state: dict, source: str, what: str) -> None:
    """module.load_state_dict(state), refused with one UserError naming the missing and unexpected keys and the shapes
    that differ (the first three of each) when `state` does not fit; `what` names the module in the message."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        problems = (f"{len(missing)} missing (first: {missing[:3]})" if missing else "",
                    f"{len(unexpected)} unexpected (first: {unexpected[:3]})" if unexpected else "",
                    f"shapes differ: {wrong[:3]}" if wrong else "")
        raise UserError(f"{source}: does not fit {what}: {'; '.join(p for p in problems if p)}")
    module.load_state_dict(state)


def rename_key(name: str, renames) -> str | None:
    """`name` under the first (regex pattern, replacement) of `renames` that matches it; None when none does. What the
    release loaders share to map a published state dict's names onto atelier's modules."""
    import re

    for pattern, replacement in renames:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    return None
