"""Translate tab: a photo -> the style of a style LoRA, by SDEdit or DDIM inversion (`atelier translate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atelier.app import checkpoints
from atelier.app.jobs import AppContext, Result, collect, flag, run_command, switch
from atelier.app.uploads import image_upload
from atelier.errors import UserError

TITLE = "Translate"
TASK = "style-lora"


def default_size(config: dict[str, Any]) -> str:
    """WxH of the images a run trained on (its data.resolution, [H, W]), '' when it does not say."""
    resolution = (config.get("data") or {}).get("resolution")
    if isinstance(resolution, list) and len(resolution) == 2:
        return f"{resolution[1]}x{resolution[0]}"
    return ""


def translate(ctx: AppContext, photo: Any, checkpoint: str, base: str, prompt: str, strength: float, inversion: bool,
              restore_detail: bool, steps: int, guidance_scale: float, seed: int, size: str, image_adapter: str,
              image_cond_scale: float) -> Result:
    """Run `atelier translate` on the uploaded photo; base model and size default to what the LoRA trained with."""
    chosen = checkpoints.resolve(checkpoint, TASK, ctx.checkpoints, ctx.roots)
    base = (base or "").strip() or str((chosen.config.get("model") or {}).get("base") or "")
    if not base:
        raise UserError(f"base model: {chosen.label} does not name the base it trained on; type it in 'base model' "
                        "(a diffusers folder, a .safetensors file or fashionsynth)")
    request = ctx.workspace.new_request("translate")
    source = image_upload(photo, "photo", request / "inputs", ctx.limits)
    out = request / "out"
    argv = ["translate", str(source), f"--model={base}", f"--lora={chosen.path}", f"--out={out}",
            *flag("prompt", prompt.strip() if prompt and prompt.strip() else None), *flag("strength", strength),
            *flag("steps", steps), *flag("guidance-scale", guidance_scale), *flag("seed", seed),
            *flag("size", (size or "").strip() or default_size(chosen.config)), *switch("inversion", inversion),
            *switch("restore-detail", restore_detail)]
    if image_adapter and image_adapter.strip():
        argv += [f"--image-adapter={image_adapter.strip()}", *flag("image-cond-scale", image_cond_scale)]
    run_command(argv)
    return collect(out, out / f"{source.stem}.png")


def build(ctx: AppContext) -> None:
    import gradio as gr

    from atelier.app.tabs.common import bind_run, checkpoint_picker, outputs_column, photo_field, seed_row

    found = ctx.of_task(TASK)
    with gr.Row():
        with gr.Column():
            photo = photo_field("translate", *(photo_source(found[0].config) if found else (None, None)))
            checkpoint = checkpoint_picker(ctx, TASK, "style LoRA run")
            prompt = gr.Textbox(label="prompt", placeholder="default: the LoRA's identifier (e.g. 'an illustration, ')")
            with gr.Row():
                strength = gr.Slider(0, 1, value=0.5, step=0.05, label="strength (share of the schedule re-noised)")
                guidance = gr.Slider(0, 15, value=7.5, step=0.5, label="guidance scale")
            with gr.Row():
                inversion = gr.Checkbox(label="DDIM inversion (keeps the layout)", value=False)
                restore = gr.Checkbox(label="restore detail lost by the VAE", value=False)
            with gr.Accordion("more settings", open=False):
                steps = gr.Slider(1, 200, value=50, step=1, label="steps (strength x steps of them run)")
                size = gr.Textbox(label="size WxH", placeholder="default: the size the LoRA trained at")
                base = gr.Textbox(label="base model", placeholder="default: the base the LoRA trained on")
                adapter = gr.Textbox(label="image adapter folder (IP-Adapter: image_encoder/ + ip-adapter*.safetensors)")
                cond_scale = gr.Slider(0, 1, value=0.3, step=0.05, label="image-condition scale (with an image adapter)")
            seed = seed_row()
            button = gr.Button("Translate", variant="primary", elem_id="translate-run")
        with gr.Column():
            outputs = outputs_column("translate", "translation")

    bind_run(button, lambda *values: translate(ctx, *values), [photo, checkpoint, base, prompt, strength, inversion, restore, steps, guidance, seed,
                                    size, adapter, cond_scale], outputs)


def photo_source(config: dict[str, Any]) -> tuple[Path | None, Path | None]:
    """(folder, list file) of the held-out photos of the data a style LoRA trained on: FashionSynth's style/photo
    beside its style/illustration, and the test.lst beside its list file."""
    from atelier.app.tabs.common import held_out_list

    data = config.get("data") or {}
    return (Path(str(data["root"])).with_name("photo") if data.get("root") else None), held_out_list(data)
