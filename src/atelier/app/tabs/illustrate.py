"""Illustrate tab: a photo -> an illustration of the same person with a Uni-DlLoRA checkpoint (`atelier illustrate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atelier.app import checkpoints
from atelier.app.jobs import AppContext, Result, collect, flag, run_command
from atelier.app.tabs.translate import default_size
from atelier.app.uploads import image_upload

TITLE = "Illustrate"
TASK = "dual-lora"


def illustrate(ctx: AppContext, photo: Any, checkpoint: str, base: str, real_weight: float, illustration_weight: float,
               rgb_share: float, adapter_scale: float, strength: float, steps: int, guidance_scale: float, seed: int,
               size: str) -> Result:
    """Run `atelier illustrate` on the uploaded photo with the chosen LoRA and adapter weights."""
    chosen = checkpoints.resolve(checkpoint, TASK, ctx.checkpoints, ctx.roots)
    request = ctx.workspace.new_request("illustrate")
    source = image_upload(photo, "photo", request / "inputs", ctx.limits)
    out = request / "out"
    argv = ["illustrate", str(source), f"--checkpoint={chosen.path}", f"--out={out}", *flag("model", (base or "").strip()),
            f"--lora-weights=real={real_weight},illustration={illustration_weight}",
            f"--adapter-weights=rgb={rgb_share},sketch={round(1 - float(rgb_share), 6)}", *flag("adapter-scale", adapter_scale),
            *flag("strength", strength), *flag("steps", steps), *flag("guidance-scale", guidance_scale),
            *flag("seed", seed), *flag("size", (size or "").strip() or default_size(chosen.config))]
    run_command(argv)
    return collect(out, out / f"{source.stem}.png")


def build(ctx: AppContext) -> None:
    import gradio as gr

    from atelier.app.tabs.common import (
        bind_run,
        checkpoint_picker,
        held_out_list,
        outputs_column,
        photo_field,
        seed_row,
    )

    found = ctx.of_task(TASK)
    with gr.Row():
        with gr.Column():
            data = (found[0].config.get("data") or {}) if found else {}
            photo = photo_field("illustrate", Path(str(data["real_root"])) if data.get("real_root") else None,
                                held_out_list(data))
            checkpoint = checkpoint_picker(ctx, TASK, "Uni-DlLoRA run or released checkpoint")
            with gr.Row():
                real = gr.Slider(0, 1, value=0, step=0.05, label="real-domain LoRA weight")
                illustration = gr.Slider(0, 1, value=1, step=0.05, label="illustration LoRA weight")
            with gr.Row():
                rgb = gr.Slider(0, 1, value=0.5, step=0.05, label="adapter share: RGB (the rest: sketch)")
                adapter_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="adapter scale")
            with gr.Accordion("more settings", open=False):
                strength = gr.Slider(0, 1, value=0.7, step=0.05, label="strength (the paper: 0.7)")
                steps = gr.Slider(1, 200, value=50, step=1, label="steps (the paper: 50)")
                guidance = gr.Slider(0, 15, value=5, step=0.5, label="guidance scale (the paper: 5)")
                size = gr.Textbox(label="size WxH", placeholder="default: the size the checkpoint trained at")
                base = gr.Textbox(label="base model", placeholder="default: the base in the checkpoint's config "
                                                                   "(needed for the released checkpoint)")
            seed = seed_row()
            button = gr.Button("Illustrate", variant="primary", elem_id="illustrate-run")
        with gr.Column():
            outputs = outputs_column("illustrate", "illustration")

    bind_run(button, lambda *values: illustrate(ctx, *values), [photo, checkpoint, base, real, illustration, rgb, adapter_scale, strength, steps,
                                    guidance, seed, size], outputs)
