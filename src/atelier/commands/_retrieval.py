"""What `atelier index`, `search` and `caption` share: finding the retrieval model a --checkpoint names, loading it on
the device, and the small HTML page each writes. Nothing heavy is imported at the top (see _folder_job)."""

from __future__ import annotations

import html
import os
from pathlib import Path

from atelier.errors import UserError

MODEL_CONFIG = "retrieval.yaml"  # atelier's retrieval folder (methods.unifashion.model.MODEL_CONFIG)
CHECKPOINT_HELP = "a `retrieval` training run (RUN/ or RUN/final/) or a Salesforce/blip2-itm-vit-g-layout folder"
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;width:180px}img{max-width:180px;max-height:240px}
figcaption{font-size:13px;word-break:break-all}.query img{max-width:240px}"""


def retrieval_checkpoint(text: str | os.PathLike) -> Path:
    """The folder holding the retrieval model of --checkpoint: RUN/final/ of a retrieval run, that final/ itself, or
    a BLIP-2 retrieval folder. UserError, naming what the folder is when it can tell, for anything else."""
    from atelier.utils.outputs import read_marker

    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise UserError(f"--checkpoint {text} is not a folder; expected {CHECKPOINT_HELP}")
    for candidate in (folder / "final", folder):
        if (candidate / MODEL_CONFIG).is_file() or _is_blip2(candidate):
            return candidate
    task = (read_marker(folder) or {}).get("task")
    if task == "retrieval":
        what = "is a retrieval run that has not finished (no final/ yet): wait for it, or"
    else:
        what = f"is a `{task}` training run, not a retrieval run:" if task else "holds no retrieval model:"
    raise UserError(f"--checkpoint {text} {what} pass {CHECKPOINT_HELP} (atelier train configs/tiny-retrieval.yaml "
                    "trains one)")


def _is_blip2(folder: Path) -> bool:
    import json

    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type") == "blip-2"
    except (OSError, ValueError, AttributeError):
        return False


def load_model(folder: Path):
    """The retrieval model of a checkpoint folder (`retrieval_checkpoint`), in eval mode on CUDA when there is one."""
    import torch

    from atelier.methods.unifashion.model import load_retrieval_model
    from atelier.utils.kept import kept

    return kept(load_retrieval_model, folder).to("cuda" if torch.cuda.is_available() else "cpu")


def image_src(image: Path, page: Path) -> str:
    """How an HTML page at `page` refers to `image`: its path relative to the page's folder (URL-quoted, escaped)."""
    from urllib.parse import quote

    relative = os.path.relpath(Path(image).resolve(), Path(page).resolve().parent)
    return html.escape(quote(Path(relative).as_posix()), quote=True)


def figure(image: Path, page: Path, caption: str) -> str:
    """One picture of a page with its caption (escaped)."""
    return f"<figure><img src='{image_src(image, page)}' loading='lazy'><figcaption>{html.escape(caption)}</figcaption></figure>"


def write_page(page: Path, title: str, body: str) -> None:
    """Write the HTML page `page` atomically: `title` as heading, then `body` (already HTML)."""
    from atelier.utils.io import write_text

    write_text(page, f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                     f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")
