"""The folder job that `translate`, `illustrate` and `pose-transfer` share: plan one output per input, keep the outputs
that exist, draw the rest in batches, then write OUT/grid.png and OUT/settings.json.

Input i of the full, ordered input list gets seed --seed + i, numbered before existing outputs are left out, so an
output depends neither on --batch-size, nor on its batch-mates, nor on resuming. Every folder command's outputs pass
through `plan`, which refuses, before any work, whatever would lose a file: two inputs for one output, an output that
is an input, an input inside OUT (or OUT inside an input folder: a rerun would read its outputs as inputs), an output
where a folder or a job file (grid.png, settings.json) is, and an OUT that is neither new, nor empty, nor an atelier
output folder. `claim_out` makes OUT one: it writes atelier's one marker (atelier.utils.outputs, command "output";
training runs carry the same file with command "train"), which is also the check that OUT is writable.

Nothing heavy is imported at the top: the commands import this module to build their parsers, and `atelier --help`
must not wait for torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from atelier.errors import UserError
from atelier.utils.outputs import MARKER as OUTPUT_MARKER
from atelier.utils.outputs import read_marker, write_marker

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch
    from PIL import Image

JOB_FILES = ("grid.png", "settings.json", "preview/grid.png", OUTPUT_MARKER)  # what a job writes besides its outputs
MAX_NAMED = 5  # inputs named in one error; the rest are counted
GRID_ROWS = 8  # OUT/grid.png shows the first results at a glance; the outputs themselves are the full record
SEED_HELP = "random seed: image i of the inputs (files as given, folders sorted) uses N+i (default 0)"


def add_job_arguments(parser: argparse.ArgumentParser, batch_size: int, unit: str = "images") -> None:
    """--batch-size (`unit` per batch, default `batch_size`) and --overwrite, the options every folder job has."""
    parser.add_argument("--batch-size", type=int, default=batch_size, metavar="N", help=f"{unit} per batch (default {batch_size})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: keep them)")


def require_positive(flags: dict[str, int | None]) -> None:
    """UserError naming the first flag whose value is below 1 ({flag: value}; None means the flag was not given)."""
    for flag, value in flags.items():
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: expected a positive integer")


def has_folder(inputs: Sequence[str]) -> bool:
    """Whether any INPUT is a folder: a many-image run, where compiling the UNet pays back."""
    return any(Path(text).expanduser().is_dir() for text in inputs)


def image_pairs(inputs: Sequence[str], out: Path) -> list[tuple[Path, Path]]:
    """(input file, output file) of INPUT files and folders, in order: a file maps to OUT/<stem>.png, a folder's images
    (searched recursively, sorted) to OUT/<folder name>/<path inside it>.png."""
    from atelier.data.formats.captioned import list_images

    pairs = []
    _refuse_inputs_in_out(inputs, out)
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            pairs += [(file, out / path.name / file.relative_to(path).with_suffix(".png")) for file in list_images(path)]
        elif path.is_file():
            pairs.append((path, out / path.with_suffix(".png").name))
        else:
            raise UserError(f"INPUT {text} not found: expected an image file or a folder of images")
    if not pairs:
        raise UserError(f"INPUT {' '.join(inputs)}: no images found (expected .jpg, .png, .webp or .bmp files)")
    return pairs


def _refuse_inputs_in_out(inputs: Sequence[str], out: Path) -> None:
    """UserError for an INPUT inside --out (its output could replace it) or an --out inside an INPUT folder (a rerun
    would take the outputs for inputs): the two folders must not nest, with or without --overwrite."""
    out_path = out.expanduser().resolve()
    for text in inputs:
        path = Path(text).expanduser().resolve()
        if path == out_path or out_path in path.parents:
            raise UserError(f"INPUT {text} lies inside --out {out}: its output could replace it; choose an --out "
                            "outside the inputs")
        if path.is_dir() and path in out_path.parents:
            raise UserError(f"--out {out} lies inside the INPUT folder {text}: a rerun would translate the outputs too; "
                            "choose an --out outside the inputs")


@dataclass(frozen=True)
class Task:
    """One output to draw: its input (an image file, or a label such as a pose pair's), its output file, its seed and
    its index in the full input list."""

    source: Any
    target: Path
    seed: int
    index: int


@dataclass
class FolderJob:
    """The outputs still to draw and what drawing them produced; made by `plan`."""

    out: Path
    todo: list[Task]
    total: int  # outputs planned, the existing ones included
    started: float = field(default_factory=time.time)
    written: list[str] = field(default_factory=list)  # output paths relative to OUT
    skipped: list[dict[str, str]] = field(default_factory=list)  # {file, reason} of the inputs that could not be read
    grid: list[list[Image.Image]] = field(default_factory=list)

    @property
    def kept(self) -> int:
        """Outputs left as an earlier run wrote them."""
        return self.total - len(self.todo)

    def batches(self, batch_size: int, desc: str) -> Iterator[list[Task]]:
        """The tasks still to do in input order, `batch_size` at a time, behind a progress bar."""
        from atelier.utils.progress import progress

        chunks = [self.todo[start : start + batch_size] for start in range(0, len(self.todo), batch_size)]
        return iter(progress(chunks, desc=desc))

    def save(self, task: Task, image: Image.Image, grid_row: list[Image.Image]) -> None:
        """Write one output atomically and show `grid_row` in the grid while it has room."""
        from atelier.utils.io import save_image

        save_image(image, task.target)
        self.written.append(str(task.target.relative_to(self.out)))
        if len(self.grid) < GRID_ROWS:
            self.grid.append(grid_row)

    def skip(self, task: Task, reason: str) -> None:
        """Record an input that could not be used; the run goes on without it."""
        self.skipped.append({"file": str(task.source), "reason": reason})

    def convert_images(self, size_hw: tuple[int, int], batch_size: int,
                       convert: Callable[[torch.Tensor, list[int]], list[Image.Image]]) -> None:
        """Load, resize to (H, W) and convert the input image files in batches with `convert(images in [-1, 1], one seed
        per image)`, saving each result with [input, result] as its grid row; unreadable inputs are skipped."""
        import torch

        from atelier.data.transforms import open_rgb, resize_image
        from atelier.utils.images import pil_to_tensor

        for batch in self.batches(batch_size, desc="convert"):
            loaded = []
            for task in batch:
                try:
                    loaded.append((task, resize_image(open_rgb(task.source), size_hw)))
                except UserError as error:
                    self.skip(task, str(error))
            if not loaded:
                continue
            results = convert(torch.stack([pil_to_tensor(image) for _, image in loaded]), [task.seed for task, _ in loaded])
            for (task, image), result in zip(loaded, results):
                self.save(task, result, [image, result])

    def finish(self, args: argparse.Namespace, extra: dict[str, Any], grid_name: str = "grid.png",
               cell: tuple[int, int] | None = None) -> None:
        """Write OUT/`grid_name` (when anything was drawn; cells of `cell` (W, H), default the first image's size) and
        OUT/settings.json: every option, `extra`, the written, kept and skipped outputs and the time taken."""
        from atelier.commands.generate import write_settings
        from atelier.utils.images import make_grid
        from atelier.utils.io import save_image

        if self.grid:
            save_image(make_grid(self.grid, cell), self.out / grid_name)
        self.out.mkdir(parents=True, exist_ok=True)
        write_settings(args, self.out, {**extra, "written": self.written, "kept": self.kept, "skipped": self.skipped,
                                        "seconds": round(time.time() - self.started, 2)})

    def report(self, verb: str) -> None:
        """Print how many outputs were written, kept and skipped, and warn naming each skipped input; UserError when
        every input was skipped and no earlier output exists (nothing done is not a success; a resumed run whose
        only inputs left are ones it skipped before is)."""
        print(f"{verb} {len(self.written)} images into {self.out} ({self.kept} existing kept, {len(self.skipped)} skipped)")
        for entry in self.skipped:
            logger.warning("skipped: %s", entry["reason"])
        if self.todo and not self.written and not self.kept:
            raise unreadable_error([entry["file"] for entry in self.skipped], len(self.todo))

    def refuse_unreadable(self) -> None:
        """Before the model loads: UserError when no input can even be opened as an image and no earlier output exists
        (a quick look at each header; inputs that open but fail to decode are skipped later, and `report` refuses a
        run that skipped them all)."""
        from PIL import Image

        unreadable = []
        for task in self.todo:
            try:
                with Image.open(task.source):
                    pass
            except Exception:  # noqa: BLE001 - any failure to open means not an image we can read; named below
                unreadable.append(str(task.source))
        if self.todo and not self.kept and len(unreadable) == len(self.todo):
            raise unreadable_error(unreadable, len(self.todo))


def unreadable_error(files: Sequence[str], total: int) -> UserError:
    """The one error for a run whose inputs could none of them be read: the first few named, the rest counted."""
    named = ", ".join(files[:MAX_NAMED]) + (f" and {len(files) - MAX_NAMED} more" if len(files) > MAX_NAMED else "")
    return UserError(f"none of the {total} inputs to convert could be read as an image: {named}; check that they are "
                     ".jpg, .png, .webp or .bmp images and readable")


def plan(pairs: Sequence[tuple[Any, Path]], out: Path, seed: int, overwrite: bool, started: float | None = None) -> FolderJob:
    """The job for (input, output file) `pairs`: input i gets seed + i, numbered before the outputs that exist are left
    out (kept unless `overwrite`). `started`: when the run began (default now), for settings.json's seconds.
    Refuses (before any work) what would lose a file, then makes OUT an atelier output folder (`claim_out`)."""
    from atelier.diffusion.sampling import check_seeds

    check_seeds(seed, len(pairs))
    _refuse_collisions(pairs)
    _refuse_blocked_outputs(pairs, out)
    claim_out(out, overwrite)
    todo = [Task(source, target, seed + index, index) for index, (source, target) in enumerate(pairs)
            if overwrite or not target.exists()]
    return FolderJob(out, todo, len(pairs), time.time() if started is None else started)


def claim_out(out: Path, overwrite: bool) -> None:
    """Make OUT an atelier output folder, before any work: refuse a file, and a non-empty folder that is not one
    (no marker; with or without --overwrite, its grid.png, settings.json and same-named files would be replaced);
    then create it and (re)write the marker, which proves it writable."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; expected a folder for the outputs (choose another --out)")
    if out.is_dir() and not is_output_folder(out) and any(out.iterdir()):
        why = "--overwrite would replace its files" if overwrite else "its files would be taken for outputs or replaced"
        raise UserError(f"--out {out} is not empty and is not an atelier output folder (no {OUTPUT_MARKER}): {why}; "
                        "choose a new or empty folder")
    try:
        write_marker(out, "output", note="an atelier output folder: --overwrite may replace the files here")
    except OSError as error:
        raise UserError(f"--out {out}: cannot write there ({error.strerror or error}); choose a folder you can write to") from None


def is_output_folder(folder: Path) -> bool:
    """Whether `folder` holds atelier outputs: the marker, or (from before the marker) a settings.json that atelier
    wrote, naming its version."""
    marker = read_marker(folder)
    if marker is not None:
        return marker.get("command") == "output"
    try:
        settings = json.loads((folder / "settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and isinstance(settings.get("versions"), dict) and "atelier" in settings["versions"]


def _refuse_blocked_outputs(pairs: Sequence[tuple[Any, Path]], out: Path) -> None:
    """UserError for an output that is one of the inputs, that would replace a job file (grid, settings, marker), or
    whose place is taken by a folder (the output) or a file (a folder on its way): found now, not mid-run."""
    inputs = {_identity(source) for source, _ in pairs if isinstance(source, Path)}
    job_files = {out / name for name in JOB_FILES}
    for source, target in pairs:
        if target in job_files:
            raise UserError(f"input {source} would be written to {target}, where the job writes its own "
                            f"{target.name}; rename the input")
        if target.resolve() in inputs:
            raise UserError(f"output {target} is one of the inputs: writing it would replace the input; choose "
                            "another --out")
        if target.is_dir():
            raise UserError(f"output {target} is a folder; move it away or choose another --out")
    for parent in {target.parent for _, target in pairs}:
        for folder in (parent, *parent.parents):
            if folder == out or folder.is_dir():
                break
            if folder.exists():
                raise UserError(f"{folder} is a file where the outputs need a folder; move it away or choose "
                                "another --out")


def _refuse_collisions(pairs: Sequence[tuple[Any, Path]]) -> None:
    """UserError when two different inputs map to one output (a.png and a.jpg both to a.png): one would replace the
    other, or, on a resumed run, be taken for it and kept. The same input listed twice is not refused."""
    first: dict[Path, Any] = {}
    for source, target in pairs:
        earlier = first.setdefault(target, source)
        if _identity(earlier) != _identity(source):
            raise UserError(f"inputs {earlier} and {source} would both be written to {target}; rename one of them, "
                            "or convert them in separate runs with different --out folders")


def _identity(source: Any) -> Any:
    """What makes two inputs the same: the file itself for paths (photos/a.png is ./photos/a.png), else the value."""
    return source.resolve() if isinstance(source, Path) else source
