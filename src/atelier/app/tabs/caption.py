"""Caption tab: a product description of an image from a retrieval run's captioner (`atelier caption`)."""

from __future__ import annotations

import json
from typing import Any

from atelier.app import checkpoints
from atelier.app.jobs import AppContext, Result, run_command
from atelier.app.uploads import image_upload

TITLE = "Caption"
TASK = "retrieval"


def has_captioner(checkpoint: checkpoints.Checkpoint) -> bool:
    """Whether a retrieval run trained a captioner (phase pretrain with a language model; a composed-phase run has
    none), so the tab offers only runs `atelier caption` accepts."""
    from atelier.methods.unifashion.train import CAPTIONER_FOLDER

    return (checkpoint.path / CAPTIONER_FOLDER / "captioner.json").is_file()


def caption(ctx: AppContext, image: Any, checkpoint: str) -> tuple[str, Result]:
    """Run `atelier caption` on the uploaded image; returns the caption and the Result (captions.json, .html)."""
    chosen = checkpoints.resolve(checkpoint, TASK, ctx.checkpoints, ctx.roots)
    request = ctx.workspace.new_request("caption")
    source = image_upload(image, "image", request / "inputs", ctx.limits)
    out = request / "out"
    run_command(["caption", str(source), f"--checkpoint={chosen.path}", f"--out={out}"])
    captions = json.loads((out / "captions.json").read_text(encoding="utf-8"))
    return next(iter(captions.values())), Result(source, [out / "captions.json", out / "captions.html"], captions)


def build(ctx: AppContext) -> None:
    import gradio as gr

    from atelier.app.tabs.common import checkpoint_picker, guarded

    with gr.Row():
        with gr.Column():
            image = gr.Image(label="image", type="filepath", sources=["upload"], elem_id="caption-image", height=320)
            checkpoint = checkpoint_picker(ctx, TASK, "retrieval run with a captioner", keep=has_captioner)
            button = gr.Button("Caption", variant="primary", elem_id="caption-run")
        with gr.Column():
            text = gr.Textbox(label="caption", interactive=False, elem_id="caption-text")
            files = gr.File(label="downloads", file_count="multiple", interactive=False, elem_id="caption-files")

    def handler(*values):
        words, result = caption(ctx, *values)
        return words, [str(path) for path in result.files]

    button.click(guarded(handler), [image, checkpoint], [text, files], preprocess=False)
