"""Try-on tab: a person wearing a garment with a StableVITON-style model (`atelier try-on`).

A person comes as four images: the photo, the photo with the garment region masked, the mask and a DensePose image
(`atelier prepare-tryon` makes the other three from a photo). The mask and the DensePose image are drawn over the
person as soon as they are given, so a mask that misses the garment shows before anything runs. The Design tab
(design.py) takes the same person fields and runs through `draw` too; only the control image (a sketch instead of the
garment photo), the prompt and the command differ.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atelier.app import checkpoints
from atelier.app.jobs import AppContext, Result, collect, flag, run_command
from atelier.app.uploads import image_upload
from atelier.errors import UserError

logger = logging.getLogger(__name__)

# the person's images: (key and CLI flag, what the page calls it, its VITON-HD folder, which the request mirrors)
PERSON = (("person", "person", "image"), ("agnostic", "masked person", "agnostic-v3.2"),
          ("mask", "mask", "agnostic-mask"), ("densepose", "DensePose image", "image-densepose"))
PREPARE_NOTE = ("A person is four images: the photo, the photo with the garment region masked out, the mask (white "
                "where the garment goes) and a DensePose image. `atelier prepare-tryon --images DIR --out DATA` makes "
                "the other three from your photos (in DATA/test/agnostic-v3.2, agnostic-mask and image-densepose).")
MASK_TINT = np.array([255, 0, 0], dtype=np.float32)
PREVIEW_MAX_SIDE = 768  # a larger person is shrunk for the preview only


@dataclass(frozen=True)
class Kind:
    """What tells the Try-on and Design tabs apart: the command, the run task and model mode it needs, the control
    image (its flag, its VITON-HD folder, what the page calls it) and the default guidance scale (the command's)."""

    name: str  # the tab's id and request folder
    title: str
    command: str
    task: str
    mode: str
    control_flag: str
    control_folder: str
    control_label: str
    guidance: float


TRYON = Kind("tryon", "Try-on", "try-on", "tryon", "tryon", "garment", "cloth", "garment photo", 1.0)
DESIGN = Kind("design", "Design", "design", "garment-design", "design", "sketch", "im_sketch", "garment sketch", 2.0)
KINDS = {kind.mode: kind for kind in (TRYON, DESIGN)}
TITLE = TRYON.title
TASK = TRYON.task


def mode_of(checkpoint: checkpoints.Checkpoint) -> str | None:
    """What a run's model was trained for (tryon.yaml's mode: tryon or design), None when it has no readable model."""
    from atelier.methods.tryon.model import read_model_config

    try:
        return read_model_config(checkpoint.path).mode
    except UserError:
        return None


def chosen_model(ctx: AppContext, checkpoint: str, kind: Kind) -> checkpoints.Checkpoint:
    """The checkpoint field's run, checked to hold a model of the tab's mode before any upload is copied."""
    chosen = checkpoints.resolve(checkpoint, kind.task, ctx.checkpoints, ctx.roots)
    mode = mode_of(chosen)
    if mode is None:
        raise UserError(f"checkpoint {chosen.label}: not a tryon or garment-design training run (no readable "
                        "tryon.yaml in it or its final/)")
    if mode != kind.mode:
        raise UserError(f"checkpoint {chosen.label} was trained for {mode}; use it in the {KINDS[mode].title} tab, or "
                        f"choose a run trained for {kind.mode}")
    return chosen


def person_uploads(ctx: AppContext, values: dict[str, Any], into: Path) -> dict[str, Path]:
    """The four person images checked and copied into INTO/<VITON-HD folder>/ (a person and its DensePose image often
    share a name); one error naming every missing one first."""
    missing = [label for key, label, _ in PERSON if values.get(key) in (None, "")]
    if missing:
        raise UserError(f"{', '.join(missing)}: not uploaded. {PREPARE_NOTE}")
    return {key: image_upload(values[key], label, into / folder, ctx.limits) for key, label, folder in PERSON}


def draw(ctx: AppContext, kind: Kind, person: dict[str, Any], control: Any, prompt: str | None, checkpoint: str,
         steps: int, guidance_scale: float, scheduler: str, seed: int) -> Result:
    """Run `atelier try-on` or `atelier design` on one uploaded person (every file passed by flag, so nothing is looked
    up beside the uploads) and return its output <person>.png, the preview grid and settings.json."""
    chosen = chosen_model(ctx, checkpoint, kind)
    prompt = (prompt or "").strip()
    if kind.mode == "design" and not prompt:
        raise UserError("prompt: empty; say what the garment is (colour, kind, pattern), e.g. 'red t-shirt, short sleeves'")
    request = ctx.workspace.new_request(kind.name)
    inputs = request / "inputs"
    files = person_uploads(ctx, person, inputs)
    control_file = image_upload(control, kind.control_label, inputs / kind.control_folder, ctx.limits)
    out = request / "out"
    run_command([kind.command, f"--checkpoint={chosen.path}", *(f"--{key}={path}" for key, path in files.items()),
                 f"--{kind.control_flag}={control_file}", *flag("prompt", prompt), f"--out={out}", *flag("steps", steps),
                 *flag("guidance-scale", guidance_scale), *flag("scheduler", scheduler), *flag("seed", seed)])
    return collect(out, out / f"{files['person'].stem}.png")


def try_on(ctx: AppContext, person: Any, agnostic: Any, mask: Any, densepose: Any, garment: Any, checkpoint: str,
           steps: int, guidance_scale: float, scheduler: str, seed: int) -> Result:
    """Run `atelier try-on`: the uploaded person wearing the uploaded garment."""
    values = {"person": person, "agnostic": agnostic, "mask": mask, "densepose": densepose}
    return draw(ctx, TRYON, values, garment, None, checkpoint, steps, guidance_scale, scheduler, seed)


def preview(ctx: AppContext, person: Any, mask: Any, densepose: Any) -> np.ndarray | None:
    """The mask (tinted red) and the DensePose image (half blended) over the person, side by side at the person's size;
    None until the person and one of the two are given. The mask is read as the model reads it (white: drawn)."""
    from PIL import Image

    if person in (None, "") or (mask in (None, "") and densepose in (None, "")):
        return None
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        photo = _opened(image_upload(person, "person", folder / "image", ctx.limits), "RGB")
        scale = min(1.0, PREVIEW_MAX_SIDE / max(photo.size))
        size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
        base = np.asarray(photo.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
        panels = []
        if mask not in (None, ""):
            grey = _opened(image_upload(mask, "mask", folder / "agnostic-mask", ctx.limits), "L")
            covered = np.asarray(grey.resize(size, Image.Resampling.NEAREST)) >= 128
            panels.append(np.where(covered[..., None], 0.5 * base + 0.5 * MASK_TINT, base))
        if densepose not in (None, ""):
            dense = _opened(image_upload(densepose, "DensePose image", folder / "image-densepose", ctx.limits), "RGB")
            panels.append(0.5 * base + 0.5 * np.asarray(dense.resize(size, Image.Resampling.BILINEAR), dtype=np.float32))
    gap = np.full((size[1], 4, 3), 255.0, dtype=np.float32)
    joined = [part for panel in panels for part in (panel, gap)][:-1]
    return np.concatenate(joined, axis=1).round().astype(np.uint8)


def _opened(path: Path, mode: str):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert(mode)


def held_out_people(config: dict[str, Any], kind: Kind, count: int = 3) -> list[list[str]]:
    """Rows for the tab's examples: the first `count` unpaired test pairs of the VITON-HD folder the run trained on
    (its data.root): person, the partner's garment photo or sketch (and for design the garment's caption), masked
    person, mask, DensePose (the table shows its first columns). None when the folder cannot be read (examples are a
    convenience: the tab works without)."""
    from atelier.data.formats.vitonhd import load_vitonhd
    from atelier.methods.tryon.data import caption_text

    root = (config.get("data") or {}).get("root")
    if not root or not Path(str(root)).is_dir():
        return []
    rows = []
    try:
        split = load_vitonhd(str(root), "test")
        captions = split.captions() if kind.mode == "design" else {}
        for pair in split.setting("unpaired"):
            control = split.cloth(pair) if kind.mode == "tryon" else split.sketch(pair, "unpaired")
            person = [split.image(pair), split.agnostic(pair), split.agnostic_mask(pair), split.densepose(pair)]
            if not all(path.is_file() for path in [*person, control]):
                continue
            caption = [caption_text(captions, pair.garment, split.captions_file())] if kind.mode == "design" else []
            rows.append([str(person[0]), str(control), *caption, *map(str, person[1:])])
            if len(rows) == count:
                break
    except UserError as error:
        logger.warning("app: no %s examples from %s (%s)", kind.name, root, error)
        return []
    return rows


def build_tab(ctx: AppContext, kind: Kind, button_text: str, output_label: str):
    """The widgets of a try-on or design tab; returns (the image inputs: person, masked person, mask, DensePose,
    control image, and for design the prompt; the settings: checkpoint, steps, guidance, sampler, seed; the run
    button; the outputs column)."""
    import gradio as gr

    from atelier.app.tabs.common import checkpoint_picker, guarded, outputs_column, seed_row
    from atelier.diffusion.sampling import SCHEDULERS

    name = kind.name
    found = [checkpoint for checkpoint in ctx.of_task(kind.task) if mode_of(checkpoint) == kind.mode]
    examples = held_out_people(found[0].config, kind) if found else []
    with gr.Row():
        with gr.Column():
            gr.Markdown(PREPARE_NOTE)
            with gr.Row():
                person = gr.Image(label="person", type="filepath", sources=["upload"], elem_id=f"{name}-person", height=240)
                control = gr.Image(label=kind.control_label, type="filepath", sources=["upload"], elem_id=f"{name}-{kind.control_flag}",
                                   height=240)
                shown = gr.Image(label="preview: mask (red), DensePose", interactive=False,
                                 elem_id=f"{name}-preview", elem_classes=["atelier-output"], height=240)
            with gr.Row():
                agnostic = gr.Image(label="masked person", type="filepath", sources=["upload"], elem_id=f"{name}-agnostic",
                                    height=180)
                mask = gr.Image(label="mask (white: the garment's region)", type="filepath", sources=["upload"],
                                elem_id=f"{name}-mask", height=180)
                densepose = gr.Image(label="DensePose image", type="filepath", sources=["upload"],
                                     elem_id=f"{name}-densepose", height=180)
            prompt = None
            if kind.mode == "design":
                prompt = gr.Textbox(label="prompt", placeholder="what the garment is: colour, kind, pattern, e.g. "
                                    "'red t-shirt, short sleeves'", elem_id=f"{name}-prompt")
            if examples:
                gr.Examples(examples, inputs=[person, control, *([prompt] if prompt else []), agnostic, mask, densepose],
                            label=f"held-out people of the model's dataset, each with another's {kind.control_label}"
                                  + (" and its caption" if prompt else ""))
            checkpoint = checkpoint_picker(ctx, kind.task, f"{checkpoints.TASKS[kind.task][0]} (a {kind.task} run)",
                                           keep=lambda candidate: mode_of(candidate) == kind.mode)
            with gr.Row():
                steps = gr.Slider(1, 200, value=50, step=1, label="steps (StableVITON: 50)")
                guidance = gr.Slider(0, 15, value=kind.guidance, step=0.5, label="guidance scale"
                                     + (" (over the empty prompt: no effect on try-on)" if kind.mode == "tryon" else
                                        " (over the prompt)"))
            with gr.Accordion("more settings", open=False):
                scheduler = gr.Dropdown(list(SCHEDULERS), value="ddim", label="sampler (StableVITON: ddim)")
            seed = seed_row()
            button = gr.Button(button_text, variant="primary", elem_id=f"{name}-run")
        with gr.Column():
            outputs = outputs_column(name, output_label)

    drawn_over = [person, mask, densepose]
    for widget in drawn_over:
        widget.change(guarded(lambda *values: preview(ctx, *values)), drawn_over, shown, preprocess=False)
    images = [person, agnostic, mask, densepose, control, *([prompt] if prompt else [])]
    return images, [checkpoint, steps, guidance, scheduler, seed], button, outputs


def build(ctx: AppContext) -> None:
    from atelier.app.tabs.common import bind_run

    images, settings, button, outputs = build_tab(ctx, TRYON, "Try on", "the person wearing the garment")
    bind_run(button, lambda *values: try_on(ctx, *values), [*images, *settings], outputs)
