"""Released model folders: a diffusers directory in fp16 safetensors with a MANIFEST.json of every file's sha256,
its training config and logs beside it. The package's embedded base (`fashionsynth`) is one; loading it checks every
sum first, so a damaged or edited copy is refused by name instead of drawing nonsense.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from atelier.errors import DependencyError

MANIFEST = "MANIFEST.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_release(model_dir: str | Path, dest: str | Path, config: dict[str, Any] | None = None,
                  logs: dict[str, Path] | None = None) -> Path:
    """Copy the diffusers model at model_dir into dest as fp16 safetensors, with config.yaml, the logs and MANIFEST.json."""
    import torch
    import yaml

    from atelier.diffusion.components import load_components
    from atelier.utils.io import write_json

    dest = Path(dest)
    tmp = dest.with_name(f".tmp-{dest.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    components = load_components(model_dir)
    components.to("cpu", torch.float16)
    components.save(tmp)
    if config is not None:
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for name, source in (logs or {}).items():
        if Path(source).is_file():
            shutil.copyfile(source, tmp / name)
    files = sorted(path for path in tmp.rglob("*") if path.is_file())
    write_json(tmp / MANIFEST, {str(path.relative_to(tmp)): {"sha256": sha256(path), "bytes": path.stat().st_size}
                                for path in files})
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)  # the folder appears whole or not at all
    return dest


def verify_release(folder: str | Path) -> None:
    """Check every file of MANIFEST.json against its sha256; raise naming the first that is missing or differs."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise DependencyError(f"model folder {folder} has no {MANIFEST}: the installed atelier is incomplete; "
                              "reinstall it (make install) or restore the folder from git")
    for name, entry in json.loads(manifest_path.read_text()).items():
        path = folder / name
        if not path.is_file() or sha256(path) != entry["sha256"]:
            state = "is missing" if not path.is_file() else "does not match its sha256 in MANIFEST.json"
            raise DependencyError(f"{path} {state}: the embedded model is damaged; reinstall atelier (make install) "
                                  "or restore the folder from git (git checkout -- src/atelier/assets)")
