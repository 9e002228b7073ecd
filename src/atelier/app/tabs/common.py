"""Widgets and wiring every tab shares: the checkpoint picker, the seed row, the outputs column, and the wrapper
that turns a handler's errors into a message in the page while the app keeps serving."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from atelier.app.checkpoints import missing_message
from atelier.app.jobs import AppContext, Result
from atelier.errors import UserError

logger = logging.getLogger(__name__)
SEED_MAX = 2**31 - 1


def checkpoint_picker(ctx: AppContext, task: str, label: str, keep: Callable[[Any], bool] | None = None) -> gr.Dropdown:
    """A dropdown of the runs of `task` found under --checkpoints (only those `keep` accepts, when given; a path may be
    typed in); above it, when none was found, the message saying how to train one."""
    found = [checkpoint for checkpoint in ctx.of_task(task) if keep is None or keep(checkpoint)]
    if not found:
        gr.Markdown(f"**{missing_message(task, ctx.roots)}**", elem_classes=["atelier-missing"])
    return gr.Dropdown(choices=[checkpoint.label for checkpoint in found], value=found[0].label if found else None,
                       allow_custom_value=True, label=label, info="a run found under --checkpoints, or a folder path")


def seed_row() -> gr.Number:
    """The seed field with a button that draws a new one."""
    with gr.Row(equal_height=True):
        seed = gr.Number(value=0, precision=0, minimum=0, maximum=SEED_MAX, label="seed", scale=4)
        randomise = gr.Button("randomise", scale=1, size="sm")
    randomise.click(lambda: random.randint(0, SEED_MAX), None, seed)
    return seed


def outputs_column(name: str, image_label: str) -> tuple[gr.Image, gr.File, gr.JSON]:
    """The output image (elem_id NAME-output), the files to download (output, grid, settings.json) and the settings
    the run used."""
    image = gr.Image(label=image_label, type="filepath", interactive=False, elem_id=f"{name}-output",
                     elem_classes=["atelier-output"], height=320)
    files = gr.File(label="downloads", file_count="multiple", interactive=False)
    settings = gr.JSON(label="settings.json (the same file the CLI writes)", open=False)
    return image, files, settings


def shown(result: Result) -> tuple[str | None, list[str], dict]:
    """A Result as the values of outputs_column."""
    return (str(result.image) if result.image else None, [str(path) for path in result.files], result.settings)


def bind_run(button: gr.Button, run: Callable[..., Result], inputs: list, outputs: tuple) -> None:
    """Clicking `button` runs `run(*values of inputs)` (raw uploads: `preprocess=False`, the uploads module checks
    them) and shows its Result in `outputs` (an outputs_column); errors show in the page."""
    button.click(guarded(lambda *values: shown(run(*values))), inputs, list(outputs), preprocess=False)


def guarded(handler: Callable[..., Any]) -> Callable[..., Any]:
    """`handler` with its errors shown in the page: a UserError's message as is, anything else as an internal error
    (logged with its traceback); the app keeps serving either way."""

    def run(*values: Any, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> Any:  # noqa: B008 - gradio's way
        progress(0, desc="starting")
        try:
            return handler(*values)
        except UserError as error:
            raise gr.Error(str(error), duration=None) from None
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001 - a bug must not stop the server; the log has the traceback
            logger.exception("app: internal error")
            raise gr.Error(f"internal error ({type(error).__name__}: {str(error)[:200]}); the server log has the "
                           "traceback", duration=None) from None

    run.__name__ = getattr(handler, "__name__", "run")
    return run


def example_images(folder: Path | None, list_file: Path | None = None, count: int = 4) -> list[str]:
    """The first `count` images of `folder` (those listed in `list_file` when given), for a tab's examples; none when
    the folder or list cannot be read (examples are a convenience: the tab works without them)."""
    from atelier.data.formats.captioned import list_images
    from atelier.data.formats.lists import read_list

    if folder is None or not folder.is_dir():
        return []
    images = list_images(folder)
    if list_file is not None and list_file.is_file():
        try:
            listed = set(read_list(list_file))
        except UserError as error:
            logger.warning("app: no examples from %s (%s)", list_file, error)
            return []
        images = [path for path in images if path.name in listed or path.stem in listed] or images
    return [str(path) for path in images[:count]]


def held_out_list(data: dict[str, Any]) -> Path | None:
    """The test.lst beside a run config's data.list_file (FashionSynth's held-out people), None without one."""
    return Path(str(data["list_file"])).with_name("test.lst") if data.get("list_file") else None


def photo_field(name: str, folder: Path | None, list_file: Path | None) -> gr.Image:
    """The photo upload (elem_id NAME-photo) with the first held-out photos of `folder` as examples under it."""
    photo = gr.Image(label="photo", type="filepath", sources=["upload"], elem_id=f"{name}-photo", height=320)
    examples = example_images(folder, list_file=list_file)
    if examples:
        gr.Examples([[path] for path in examples], inputs=[photo], label="held-out FashionSynth photos")
    return photo
