"""The folder job that `translate`, `illustrate` and `pose-transfer` share: plan one output per input, keep the outputs
that exist, draw the rest in batches, then write OUT/grid.png and OUT/settings.json.

Input i of the full, ordered input list gets seed --seed + i, numbered before existing outputs are left out, so an
output depends neither on --batch-size, nor on its batch-mates, nor on resuming. Every folder command's outputs pass
through `plan`: checks on where outputs go belong there (`_refuse_collisions`; next, an output that is an input).

Nothing heavy is imported at the top: the commands import this module to build their parsers, and `atelier --help`
must not wait for torch.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from atelier.errors import UserError

if TYPE_CHECKING:
    import torch
    from PIL import Image

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
        """Print how many outputs were written, kept and skipped, and why each skipped input was."""
        print(f"{verb} {len(self.written)} images into {self.out} ({self.kept} existing kept, {len(self.skipped)} skipped)")
        for entry in self.skipped:
            print(f"  skipped: {entry['reason']}")


def plan(pairs: Sequence[tuple[Any, Path]], out: Path, seed: int, overwrite: bool, started: float | None = None) -> FolderJob:
    """The job for (input, output file) `pairs`: input i gets seed + i, numbered before the outputs that exist are left
    out (kept unless `overwrite`). `started`: when the run began (default now), for settings.json's seconds."""
    _refuse_collisions(pairs)
    todo = [Task(source, target, seed + index, index) for index, (source, target) in enumerate(pairs)
            if overwrite or not target.exists()]
    return FolderJob(out, todo, len(pairs), time.time() if started is None else started)


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
