"""What is installed: package versions, the device, the tested lock, and the combinations known not to work.

Used by `atelier doctor` and by every place that catches a library's error, so that a version gate inside diffusers,
transformers or PEFT reaches the user as "these packages clash, do this", never as a mistake in their input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import atelier

PACKAGES = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "numpy", "numba", "pillow")
LOCK_FILE = Path(atelier.__file__).resolve().parents[2] / "requirements" / "lock.txt"  # in a source checkout
_VERSION_WORDS = re.compile(r"\bversion\b.*\b(compatible|requires?|greater|at least|>=|upgrade|update)\b", re.I)
_MINIMUM = re.compile(r"(?:>=|greater than(?: or equal to)?|at least)\s*v?([0-9]+(?:\.[0-9]+)*)", re.I)


def installed(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Installed versions of the packages atelier's results depend on."""
    return {name: installed(name) for name in PACKAGES}


def _release(version: str | None) -> tuple[int, ...]:
    """The numeric release of a version string ('2.13.0+cpu' -> (2, 13, 0)); () when absent."""
    if not version:
        return ()
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


@dataclass(frozen=True)
class KnownIssue:
    """A combination of releases that is known not to work, what it breaks, and the fix."""

    packages: tuple[str, ...]
    breaks: str
    fix: str


def known_issues(found: dict[str, str | None] | None = None) -> list[KnownIssue]:
    """The known-bad combinations present in `found` (default: what is installed)."""
    found = versions() if found is None else found
    issues = []
    if _release(found.get("transformers")) >= (5, 24) and () < _release(found.get("peft")) < (0, 22):
        issues.append(KnownIssue(
            ("transformers", "peft"),
            "transformers >= 5.24 refuses PEFT < 0.22 in its own adapter methods (add_adapter, load_adapter): diffusers' "
            "pipe.load_lora_weights fails on text-encoder LoRAs; atelier injects LoRAs through PEFT itself and is not "
            "affected",
            'pip install "transformers<5.24" (or a PEFT >= 0.22 once released), or install the lock',
        ))
    return issues


def version_clash(error: BaseException) -> str | None:
    """A one-line explanation naming the packages and versions if `error` is a library's version gate, else None."""
    text = str(error).splitlines()[0] if str(error) else ""
    if not _VERSION_WORDS.search(text):
        return None
    found = versions()
    named = [name for name in PACKAGES if re.search(rf"\b{name}\b", text, re.I)]
    raiser = _raising_package(error)
    involved = list(dict.fromkeys([*named, *([raiser] if raiser in PACKAGES else [])]))
    listed = ", ".join(f"{name} {found.get(name) or 'not installed'}" for name in involved) or "see `atelier doctor`"
    minimum = _MINIMUM.search(text)
    needed = f'; {named[0]} {minimum.group(1)} or newer is required' if named and minimum else ""
    fix = f'pip install "{named[0]}>={minimum.group(1)}"' if named and minimum else "pip install -r requirements/lock.txt"
    return (f"installed packages clash ({listed}){needed}: {text}. Fix: install the tested set "
            f"(pip install -r requirements/lock.txt, as `make install` does) or {fix}; `atelier doctor` lists versions")


def _raising_package(error: BaseException) -> str | None:
    """The top-level package whose code raised `error` (the innermost traceback frame)."""
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    if traceback is None:
        return None
    return str(traceback.tb_frame.f_globals.get("__name__", "")).split(".")[0] or None


def lock_pins(path: Path = LOCK_FILE) -> dict[str, str]:
    """name -> version of every `name==version` line of the lock file (empty when there is none)."""
    if not path.is_file():
        return {}
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def device_summary() -> str:
    """The accelerator torch sees, in words."""
    import torch

    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())}
        return f"cuda ({torch.cuda.device_count()} x {', '.join(sorted(names))}, CUDA {torch.version.cuda})"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return f"cpu ({torch.get_num_threads()} threads)"
