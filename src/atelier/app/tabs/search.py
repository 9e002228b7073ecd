"""Search tab: a catalogue index searched by text, by image, or by an image and a modification text
(`atelier search`); the hits are shown as a gallery."""

from __future__ import annotations

import json
import shutil
from typing import Any

from atelier.app import checkpoints
from atelier.app.jobs import AppContext, Result, flag, run_command
from atelier.app.uploads import image_upload
from atelier.errors import UserError

TITLE = "Search"
TASK = "index"


def search(ctx: AppContext, index: str, text: str, image: Any, k: int) -> tuple[list[tuple[str, str]], Result]:
    """Run `atelier search` on the chosen index; returns the gallery (image, caption) of the hits (copied into the
    request folder, so the page shows them from there) and the Result (results.json)."""
    chosen = checkpoints.resolve(index, TASK, ctx.checkpoints, ctx.roots)
    text = (text or "").strip()
    if not text and image is None:
        raise UserError("query: type a text, upload an image, or both (the image modified by the text)")
    request = ctx.workspace.new_request("search")
    query = image_upload(image, "query image", request / "inputs", ctx.limits) if image is not None else None
    out = request / "out"
    out.mkdir()
    results = out / "results.json"
    run_command(["search", f"--index={chosen.path}", *flag("text", text), *flag("image", query), f"-k={int(k)}",
                 f"--out={results}"])
    hits = json.loads(results.read_text(encoding="utf-8"))["hits"]
    gallery = []
    for hit in hits:
        copy = out / "hits" / f"{hit['rank']:03d}-{hit['path'].replace('/', '_')[-80:]}"
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(hit["path"], copy)
        gallery.append((str(copy), f"#{hit['rank']}  {hit['score']:.4f}"))
    return gallery, Result(None, [results], json.loads(results.read_text(encoding="utf-8")))


def build(ctx: AppContext) -> None:
    import gradio as gr

    from atelier.app.tabs.common import checkpoint_picker, guarded

    with gr.Row():
        with gr.Column(scale=1):
            index = checkpoint_picker(ctx, TASK, "catalogue index (atelier index)")
            text = gr.Textbox(label="text", placeholder="a red dress with long sleeves; with an image: 'is blue instead "
                                                        "of red'", elem_id="search-text")
            image = gr.Image(label="query image (optional)", type="filepath", sources=["upload"], elem_id="search-image",
                             height=240)
            k = gr.Slider(1, 50, value=10, step=1, label="hits")
            button = gr.Button("Search", variant="primary", elem_id="search-run")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="hits", columns=5, height="auto", elem_id="search-hits")
            files = gr.File(label="downloads", file_count="multiple", interactive=False)
            report = gr.JSON(label="results.json", open=False)

    def handler(*values):
        hits, result = search(ctx, *values)
        return hits, [str(path) for path in result.files], result.settings

    button.click(guarded(handler), [index, text, image, k], [gallery, files, report], preprocess=False)
