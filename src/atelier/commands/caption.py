"""`atelier caption`: describe product images with a retrieval run's captioner (UniFashion's Q-Former soft prompt)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from atelier.commands._retrieval import CHECKPOINT_HELP
from atelier.errors import UserError

logger = logging.getLogger(__name__)

EPILOG = """examples:
  atelier caption runs/fs/retrieval/products --checkpoint runs/retrieval --out out/captions
  atelier caption dress.jpg shirts/ --checkpoint runs/retrieval/final --out out/captions --max-new-tokens 32
IMAGES is any mix of image files and folders (searched recursively: .jpg .jpeg .png .webp .bmp).
Writes OUT/captions.json ({image path: caption}), OUT/captions.html (each image beside its caption) and
OUT/settings.json. The checkpoint must hold a captioner: phase pretrain with model.language_model set trains one.
Images that cannot be read are skipped and named."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("caption", help="caption images with a retrieval run's captioner (UniFashion)",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="IMAGES", help="image files and/or folders")
    parser.add_argument("--checkpoint", required=True, metavar="RUN", help=CHECKPOINT_HELP + " with a captioner/")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for captions.json and .html")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per batch (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=24, metavar="N", help="longest caption in tokens (default 24)")
    parser.set_defaults(func=run)


def input_images(inputs: list[str]) -> list[Path]:
    """The image files among IMAGES and under its folders (sorted within each), in order; UserError for a path that
    does not exist and for no image at all."""
    from atelier.data.formats.captioned import list_images

    images = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            images += list_images(path)
        elif path.is_file():
            images.append(path)
        else:
            raise UserError(f"IMAGES {text} not found: expected an image file or a folder of images")
    if not images:
        raise UserError(f"IMAGES {' '.join(inputs)}: no images found (expected .jpg, .jpeg, .png, .webp or .bmp files)")
    return list(dict.fromkeys(images))


def has_captioner(folder: Path) -> bool:
    return (folder / "captioner" / "captioner.json").is_file()


def run(args: argparse.Namespace) -> int:
    from atelier.commands._folder_job import claim_out, require_positive
    from atelier.commands._retrieval import load_model, retrieval_checkpoint
    from atelier.commands.generate import write_settings
    from atelier.commands.index import readable

    started = time.time()
    require_positive({"--batch-size": args.batch_size, "--max-new-tokens": args.max_new_tokens})
    found = input_images(args.inputs)
    checkpoint = retrieval_checkpoint(args.checkpoint)
    if not has_captioner(checkpoint):
        raise UserError(f"--checkpoint {args.checkpoint} has no captioner ({checkpoint / 'captioner'} is missing): "
                        "train phase pretrain with model.language_model set (e.g. configs/tiny-retrieval.yaml)")
    images, skipped = readable(found)
    if not images:
        raise UserError(f"none of the {len(skipped)} IMAGES could be opened as an image (first: {skipped[0]}); check "
                        "that they are readable images")
    claim_out(args.out, overwrite=False)
    captions = caption_images(load_model(checkpoint), checkpoint, images, args.batch_size, args.max_new_tokens)
    write_captions(args.out, captions)
    for path in skipped:
        logger.warning("skipped (cannot be opened as an image): %s", path)
    write_settings(args, args.out, {"checkpoint": str(checkpoint), "captioned": len(captions), "skipped": skipped,
                                    "seconds": round(time.time() - started, 2)})
    print(f"captioned {len(captions)} images into {args.out / 'captions.json'} ({len(skipped)} skipped)")
    return 0


def caption_images(model, checkpoint: Path, images: list[Path], batch_size: int, max_new_tokens: int) -> dict[str, str]:
    """{image path: greedy caption} of `images`, in batches behind the one progress bar."""
    from atelier.data.transforms import open_rgb
    from atelier.methods.unifashion.model import preprocess
    from atelier.methods.unifashion.train import load_captioner
    from atelier.utils.progress import progress

    captioner = load_captioner(checkpoint, model).to(next(model.parameters()).device)
    captions = {}
    for start in progress(range(0, len(images), batch_size), desc="caption"):
        batch = images[start : start + batch_size]
        pixels = preprocess([open_rgb(path) for path in batch], model.config.image_size).to(next(model.parameters()).device)
        captions.update(zip(map(str, batch), captioner.generate(pixels, max_new_tokens, model.tokenizer)))
    return captions


def write_captions(out: Path, captions: dict[str, str]) -> None:
    """OUT/captions.json and OUT/captions.html (each image, referenced by its path relative to OUT, and its caption)."""
    from atelier.commands._retrieval import figure, write_page
    from atelier.utils.io import write_json

    write_json(out / "captions.json", captions)
    grid = "".join(figure(Path(path), out / "captions.html", f"{caption}  ({Path(path).name})")
                   for path, caption in captions.items())
    write_page(out / "captions.html", f"atelier caption: {len(captions)} images", f"<div class='grid'>{grid}</div>")
