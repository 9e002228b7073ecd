"""`atelier index`: embed a catalogue of product images with a retrieval model into a searchable FAISS index."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from atelier.commands._retrieval import CHECKPOINT_HELP
from atelier.errors import UserError

logger = logging.getLogger(__name__)

EPILOG = """examples:
  atelier index --checkpoint runs/retrieval --images runs/fs/retrieval/products --out runs/catalogue
  atelier index --checkpoint /models/blip2-itm-vit-g --images fashioniq/images --out fiq-index --batch-size 64 --ivf
Embeds every image under --images (searched recursively: .jpg .jpeg .png .webp .bmp) with the model's Q query
features and writes OUT/vectors.npy, OUT/index.faiss and OUT/items.json (paths, checkpoint, settings). The index is
exact (FAISS IndexFlatIP) up to a million vectors (items x queries), IVF beyond or with --ivf.
Interrupted? Run the same command again: finished batches are kept (same model, batch size and images).
Images that cannot be opened are skipped and named. Search it with atelier search --index OUT."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("index", help="embed a catalogue of images into a search index (UniFashion retrieval)",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="RUN", help=CHECKPOINT_HELP)
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of catalogue images (recursive)")
    parser.add_argument("--out", required=True, type=Path, metavar="INDEX", help="folder to write the index into")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per batch (default 32)")
    parser.add_argument("--ivf", action="store_true",
                        help="an approximate IndexIVFFlat (trained on a sample) even below a million vectors")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over: embed every image again instead of keeping an earlier run's batches")
    parser.set_defaults(func=run)


def catalogue_images(text: str) -> list[Path]:
    """The images under --images (absolute paths), sorted; UserError for a path that is not a folder or holds no image."""
    from atelier.data.formats.captioned import list_images

    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise UserError(f"--images {text} is not a folder; expected a folder of catalogue images")
    images = list_images(folder.resolve())
    if not images:
        raise UserError(f"--images {text}: no images found (expected .jpg, .jpeg, .png, .webp or .bmp files)")
    return images


def readable(images: list[Path]) -> tuple[list[Path], list[str]]:
    """(images whose header opens, the others' paths): a quick look before the model loads."""
    from PIL import Image

    good, bad = [], []
    for path in images:
        try:
            with Image.open(path):
                good.append(path)
        except Exception:  # noqa: BLE001 - any failure to open means an image we cannot index; named in the log
            bad.append(str(path))
    return good, bad


def claim_index_folder(out: Path, images: str, overwrite: bool) -> None:
    """Make --out an index folder before any work: refuse a file, a folder holding --images or lying inside it as
    well, and a non-empty folder that `atelier index` did not write; then write the marker (which proves it writable)."""
    from atelier.utils.outputs import check_outside, check_overwritable, write_marker

    check_outside(out, [("--images", images)])
    if Path(images).expanduser().resolve() in out.expanduser().resolve().parents:
        raise UserError(f"--out {out} lies inside --images {images}: choose an --out outside the catalogue")
    check_overwritable(out, "index")
    try:
        write_marker(out, "index", note="an atelier index: atelier index --overwrite may rebuild it")
    except OSError as error:
        raise UserError(f"--out {out}: cannot write there ({error.strerror or error}); choose a folder you can write to") from None


def run(args: argparse.Namespace) -> int:
    from atelier.commands._folder_job import require_positive
    from atelier.commands._retrieval import load_model, retrieval_checkpoint
    from atelier.methods.unifashion.index import build_index

    started = time.time()
    require_positive({"--batch-size": args.batch_size})
    checkpoint = retrieval_checkpoint(args.checkpoint)
    images, skipped = readable(catalogue_images(args.images))
    if not images:
        raise UserError(f"--images {args.images}: none of the {len(skipped)} images could be opened (first: "
                        f"{skipped[0]}); check that they are readable images")
    claim_index_folder(args.out, args.images, args.overwrite)
    for path in skipped:
        logger.warning("skipped (cannot be opened as an image): %s", path)
    model = load_model(checkpoint)
    index = build_index(model, images, args.batch_size, args.out, resume=not args.overwrite,
                        checkpoint=str(checkpoint.resolve()), ivf=True if args.ivf else None)
    print(f"indexed {len(index.paths)} images ({index.index.ntotal} vectors, {index.record['index']} index) into "
          f"{args.out} in {time.time() - started:.1f} s; {len(skipped)} skipped")
    return 0
