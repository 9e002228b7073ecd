"""`atelier translate`: style transfer of images or folders with a base model, a style LoRA and an image adapter."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from atelier.commands.generate import add_model_arguments, add_speed_arguments, size_hw, speed_from_args, write_settings

if TYPE_CHECKING:
    import torch
    from PIL import Image

logger = logging.getLogger(__name__)

EPILOG = """examples:
  atelier translate --model runs/demo/base/unet/final --lora runs/style/final photo.jpg --out out/styled --size 48x64
  atelier translate --model /models/stable-diffusion-v1-5 --lora monet-lora/ --image-adapter /models/IP-Adapter/models \\
      photos/ --out out/monet --prompt "A Monet painting, " --strength 0.5 --image-cond-scale 0.3 --steps 100
  atelier translate --model runs/demo/base/unet/final --lora runs/style/final photos/ --out out/inverted --size 48x64 \\
      --inversion --strength 0.5 --restore-detail     # keeps layout and fine detail (measured in the demo's style stage)
INPUT is any mix of image files and folders (searched recursively; outputs mirror the folder layout as .png).
Unreadable images are skipped and listed at the end; outputs that exist are kept unless --overwrite.
Image i of the inputs (in the order above) uses seed --seed + i, so each output is the same whatever --batch-size,
and a resumed run writes what an uninterrupted one would have.
Writes the images, OUT/grid.png (inputs beside translations) and OUT/settings.json (every option and the skip list).
--prompt defaults to the LoRA's identifier when LORA holds the config.yaml of an atelier style-lora run."""

GRID_ROWS = 8
SEED_HELP = "random seed: image i of the inputs (files as given, folders sorted) uses N+i (default 0)"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("translate", help="style transfer of images/folders (SDEdit + style LoRA + image adapter)",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    add_model_arguments(parser, seed_help=SEED_HELP)
    parser.add_argument("--image-adapter", metavar="DIR", help="image adapter: folder with image_encoder/ and ip-adapter*.safetensors|.bin")
    parser.add_argument("--strength", type=float, default=0.5, metavar="S", help="share of the schedule re-noised, in [0, 1] (default 0.5)")
    parser.add_argument("--image-cond-scale", type=float, default=0.3, metavar="S", help="image adapter weight (default 0.3)")
    parser.add_argument("--inversion", action="store_true",
                        help="start from the DDIM inversion of the input by the base model (LoRA off) instead of random "
                             "noise: without the LoRA it returns the input, so only the style changes (needs --scheduler ddim)")
    parser.add_argument("--source-prompt", default="", metavar="TEXT", help="prompt of the inversion (default empty)")
    parser.add_argument("--restore-detail", action="store_true",
                        help="add back what the VAE loses of the input (input - its VAE round trip): keeps prints and edges")
    parser.add_argument("--steps", type=int, default=100, metavar="N", help="scheduler steps; strength x N of them run (default 100)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="images per batch (default 4)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: keep them)")
    add_speed_arguments(parser, compile_default="on for folder INPUTs on CUDA, otherwise off")
    parser.set_defaults(func=run)


def collect_inputs(inputs: list[str], out: Path) -> list[tuple[Path, Path]]:
    """(input file, output file) pairs: files map to OUT/<stem>.png, folders to OUT/<folder>/<relative path>.png."""
    from atelier.data.formats.captioned import list_images
    from atelier.errors import UserError

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


def pending(pairs: list[tuple[Path, Path]], seed: int, overwrite: bool) -> list[tuple[Path, Path, int]]:
    """(input, output, seed) of the outputs still to write. Image i of the full input list gets seed + i, numbered before
    existing outputs are left out, so an output depends neither on --batch-size, nor on its batch-mates, nor on resuming."""
    return [(source, target, seed + index) for index, (source, target) in enumerate(pairs) if overwrite or not target.exists()]


def convert_in_batches(todo: list[tuple[Path, Path, int]], out: Path, size: tuple[int, int], batch_size: int,
                       convert: Callable[[torch.Tensor, list[int]], list[Image.Image]],
                       ) -> tuple[list[str], list[dict], list[list[Image.Image]]]:
    """Load, resize (H, W) and convert (input, output, seed) files in batches (`convert(images, seeds)`, one seed per
    image), saving each result; unreadable inputs are skipped. Returns (written paths relative to OUT, skipped
    {file, reason} entries, up to GRID_ROWS [input, output])."""
    import torch

    from atelier.data.transforms import open_rgb, resize_image
    from atelier.errors import UserError
    from atelier.utils.images import pil_to_tensor
    from atelier.utils.io import save_image
    from atelier.utils.progress import progress

    written, skipped, grid = [], [], []
    for start in progress(range(0, len(todo), batch_size), desc="convert"):
        loaded = []
        for source, target, seed in todo[start : start + batch_size]:
            try:
                loaded.append((resize_image(open_rgb(source), size), target, seed))
            except UserError as error:
                skipped.append({"file": str(source), "reason": str(error)})
        if not loaded:
            continue
        results = convert(torch.stack([pil_to_tensor(image) for image, _, _ in loaded]), [seed for _, _, seed in loaded])
        for (source_image, target, _), result in zip(loaded, results):
            save_image(result, target)
            written.append(str(target.relative_to(out)))
            if len(grid) < GRID_ROWS:
                grid.append([source_image, result])
    return written, skipped, grid


def default_prompt(lora: str | None) -> str:
    """The identifier of an atelier style-lora run (LORA/config.yaml's data.caption_prefix), else the empty prompt."""
    import yaml

    config = Path(lora) / "config.yaml" if lora else None
    if config is None or not config.is_file():
        return ""
    data = yaml.safe_load(config.read_text()) or {}
    return str(data.get("data", {}).get("caption_prefix", "")) if data.get("task") == "style-lora" else ""


def run(args: argparse.Namespace) -> int:
    from atelier.diffusion.img2img import translate
    from atelier.errors import UserError
    from atelier.methods.style.model import load_style_model
    from atelier.utils.images import make_grid
    from atelier.utils.io import save_image

    if args.batch_size < 1 or args.steps < 1:
        raise UserError(f"--batch-size {args.batch_size} / --steps {args.steps}: expected positive integers")
    started = time.time()
    pairs = collect_inputs(args.inputs, args.out)
    todo = pending(pairs, args.seed, args.overwrite)
    prompt = args.prompt if args.prompt is not None else default_prompt(args.lora)
    logger.info("translate: %d images (%d kept from earlier runs), prompt %r", len(todo), len(pairs) - len(todo), prompt)
    skipped, grid, written = [], [], []
    speed = speed_from_args(args, many=any(Path(text).expanduser().is_dir() for text in args.inputs))
    if args.inversion:
        speed = replace(speed, fuse_lora=False)  # the inversion runs the base model: the LoRA must stay switchable
    if todo:
        components, adapter = load_style_model(args.model, args.lora, args.lora_scale, args.image_adapter, speed=speed)

        def convert(images, seeds):
            return translate(components, images, [prompt] * len(images), strength=args.strength, steps=args.steps,
                             guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt, image_adapter=adapter,
                             image_cond_scale=args.image_cond_scale, seed=seeds, scheduler=args.scheduler,
                             inversion=args.inversion, source_prompt=args.source_prompt, restore_detail=args.restore_detail,
                             show_progress=False).images

        written, skipped, grid = convert_in_batches(todo, args.out, size_hw(components, args.size), args.batch_size, convert)
    if grid:
        save_image(make_grid(grid), args.out / "grid.png")
    args.out.mkdir(parents=True, exist_ok=True)
    write_settings(args, args.out, {"prompt_used": prompt, "written": written, "speed": asdict(speed),
                                    "kept": len(pairs) - len(todo), "skipped": skipped, "seconds": round(time.time() - started, 2)})
    print(f"translated {len(written)} images into {args.out} ({len(pairs) - len(todo)} existing kept, {len(skipped)} skipped)")
    for entry in skipped:
        print(f"  skipped: {entry['reason']}")
    return 0
