"""Pose transfer tab: redraw a person in the pose of another (an annotated image, or a keypoint file) with CFLD
(`atelier pose-transfer`); the target skeleton is previewed before anything runs."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from atelier.app import checkpoints
from atelier.app.jobs import AppContext, Result, collect, flag, run_command
from atelier.app.uploads import image_upload, text_upload
from atelier.errors import UserError

TITLE = "Pose transfer"
TASK = "pose"


def _annotation_files(chosen: checkpoints.Checkpoint, uploaded: Path | None) -> list[Path]:
    """Where a target image's keypoints are looked up: the uploaded annotation CSV, else the CSVs of the dataset the
    model trained on (its config's data.root)."""
    if uploaded is not None:
        return [uploaded]
    root = (chosen.config.get("data") or {}).get("root")
    return sorted(Path(str(root)).glob("*annotation*.csv")) if root else []


def target_pose(ctx: AppContext, chosen: checkpoints.Checkpoint, pose_file: Any, target_image: Any, annotations: Any,
                into: Path) -> tuple[str, np.ndarray]:
    """(name, keypoints in the model's frame) of the target pose: the keypoint file when one was uploaded, else the
    target image's row in the annotation CSVs. Uploads are checked and copied into `into`."""
    from atelier.data.formats.deepfashion import read_annotations
    from atelier.data.pairs import read_target_pose
    from atelier.methods.cfld.model import keypoint_frame

    frame = keypoint_frame(chosen.path)
    keypoint_file = text_upload(pose_file, "keypoint file", into, ctx.limits, (".json",),
                                'a keypoint JSON: {"keypoints_y": [18 numbers], "keypoints_x": [18 numbers]}')
    if keypoint_file is not None:
        try:
            return read_target_pose(str(keypoint_file), None, frame)
        except UserError as error:  # name the file as the user knows it, not its copy
            raise UserError(str(error).replace(f"--target-pose {keypoint_file}", f"keypoint file {keypoint_file.name}")) from None
    if target_image is None:
        raise UserError("target pose: upload a keypoint file, or an image of someone in the pose (with the annotation "
                        "CSV that holds its keypoints, unless it comes from the model's own dataset)")
    image = image_upload(target_image, "target pose image", into, ctx.limits)
    csv = text_upload(annotations, "annotation CSV", into, ctx.limits, (".csv",),
                      "a DeepFashion annotation CSV (name:keypoints_y:keypoints_x)")
    searched = _annotation_files(chosen, csv)
    for candidate in searched:
        found = read_annotations(candidate, frame)
        for name in (image.name, f"{image.stem}.jpg", f"{image.stem}.png"):
            if name in found:
                return image.stem, found[name].astype(np.float32)
    where = ", ".join(path.name for path in searched) or "no annotation CSV"
    raise UserError(f"target pose image {image.name}: no keypoints for it in {where}; upload its keypoint file, or the "
                    "annotation CSV that lists it")


def preview(ctx: AppContext, checkpoint: str, pose_file: Any, target_image: Any, annotations: Any) -> np.ndarray | None:
    """The target skeleton drawn in the model's keypoint frame; None while no pose is given."""
    from atelier.data.pose import draw_skeleton
    from atelier.methods.cfld.model import keypoint_frame

    if pose_file is None and target_image is None:
        return None
    chosen = checkpoints.resolve(checkpoint, TASK, ctx.checkpoints, ctx.roots)
    with tempfile.TemporaryDirectory() as scratch:
        _, keypoints = target_pose(ctx, chosen, pose_file, target_image, annotations, Path(scratch))
    frame = keypoint_frame(chosen.path)
    return draw_skeleton(keypoints, frame, frame)


def pose_transfer(ctx: AppContext, source: Any, pose_file: Any, target_image: Any, annotations: Any, checkpoint: str,
                  base: str, steps: int, scheduler: str, pose_scale: float, full_scale: float, seed: int) -> Result:
    """Run `atelier pose-transfer` on the uploaded person and target pose (written as a keypoint JSON beside the
    inputs, so settings.json names a file that exists)."""
    from atelier.methods.cfld.sample import output_name
    from atelier.utils.io import write_json

    chosen = checkpoints.resolve(checkpoint, TASK, ctx.checkpoints, ctx.roots)
    request = ctx.workspace.new_request("pose")
    inputs = request / "inputs"
    person = image_upload(source, "source person", inputs, ctx.limits)
    name, keypoints = target_pose(ctx, chosen, pose_file, target_image, annotations, inputs / "target")
    pose_json = inputs / f"{name}.json"
    write_json(pose_json, {"keypoints_y": keypoints[:, 0].tolist(), "keypoints_x": keypoints[:, 1].tolist()})
    out = request / "out"
    run_command(["pose-transfer", f"--checkpoint={chosen.path}", f"--source={person}", f"--target-pose={pose_json}",
                 f"--out={out}", *flag("base", (base or "").strip()), *flag("steps", steps), *flag("scheduler", scheduler),
                 *flag("pose-scale", pose_scale), *flag("full-scale", full_scale), *flag("seed", seed)])
    return collect(out, out / output_name(person.name, name))


def build(ctx: AppContext) -> None:
    import gradio as gr

    from atelier.app.tabs.common import bind_run, checkpoint_picker, example_images, guarded, outputs_column, seed_row
    from atelier.diffusion.sampling import SCHEDULERS

    found = ctx.of_task(TASK)
    root = (found[0].config.get("data") or {}).get("root") if found else None
    examples = example_images(Path(str(root)) / "test_highres" if root else None, count=6)
    with gr.Row():
        with gr.Column():
            with gr.Row():
                source = gr.Image(label="source person", type="filepath", sources=["upload"], elem_id="pose-source",
                                  height=256)
                target = gr.Image(label="target pose: an annotated image", type="filepath", sources=["upload"],
                                  elem_id="pose-target", height=256)
                skeleton = gr.Image(label="target skeleton", interactive=False, elem_id="pose-skeleton", height=256)
            if examples:
                gr.Examples([[path, other] for path, other in zip(examples[::2], examples[1::2])], inputs=[source, target],
                            label="held-out FashionSynth people (source, target)")
            with gr.Row():
                pose_file = gr.File(label="or a keypoint file (.json)", file_types=[".json"], elem_id="pose-keypoints")
                annotations = gr.File(label="annotation CSV for the target image (default: the model's dataset)",
                                      file_types=[".csv"], elem_id="pose-annotations")
            checkpoint = checkpoint_picker(ctx, TASK, "CFLD run or released checkpoint")
            with gr.Accordion("more settings", open=False):
                steps = gr.Slider(1, 200, value=50, step=1, label="steps (CFLD: 50)")
                scheduler = gr.Dropdown(list(SCHEDULERS), value="ddpm", label="sampler (CFLD: ddpm)")
                with gr.Row():
                    pose_scale = gr.Slider(0, 10, value=2, step=0.5, label="pose guidance scale")
                    full_scale = gr.Slider(0, 10, value=2, step=0.5, label="appearance guidance scale")
                base = gr.Textbox(label="base model (only for CFLD's released checkpoint)")
            seed = seed_row()
            button = gr.Button("Transfer pose", variant="primary", elem_id="pose-run")
        with gr.Column():
            outputs = outputs_column("pose", "source in the target pose")

    pose_inputs = [checkpoint, pose_file, target, annotations]
    for widget in pose_inputs:
        widget.change(guarded(lambda *values: preview(ctx, *values)), pose_inputs, skeleton, preprocess=False)

    bind_run(button, lambda *values: pose_transfer(ctx, *values), [source, pose_file, target, annotations, checkpoint, base, steps, scheduler,
                                    pose_scale, full_scale, seed], outputs)
