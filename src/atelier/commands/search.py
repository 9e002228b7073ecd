"""`atelier search`: the catalogue images of an `atelier index` that best match a text, an image, or an image with a
modification text (UniFashion's composed query)."""

from __future__ import annotations

import argparse
import html
from pathlib import Path

from atelier.errors import UserError

EPILOG = """examples:
  atelier search --index runs/catalogue --text "a red dress with long sleeves"
  atelier search --index runs/catalogue --image query.jpg -k 5 --out results.html
  atelier search --index runs/catalogue --image dress.png --text "is shorter and blue" --out results.json
A text alone is scored with BLIP-2's ITC (the best of each item's query features); an image alone by the best cosine
between any of its query features and any of an item's (so a catalogue image finds itself first, at 1.0); an image
with --text by the composed query (the reference image modified by the text).
Prints the top hits; --out writes them as JSON (rank, path, score) or as an HTML page of the query and the hits.
The model is the one the index names (items.json); --checkpoint points at it when it has moved."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("search", help="search an index by text, image, or image + modification text",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, metavar="INDEX", help="a folder written by atelier index")
    parser.add_argument("--text", metavar="TEXT", help="the query text, or with --image the modification text")
    parser.add_argument("--image", metavar="IMG", help="the query image, or with --text the reference image")
    parser.add_argument("-k", type=int, default=10, metavar="K", help="hits to return (default 10)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the hits to FILE: .json or .html")
    parser.add_argument("--checkpoint", metavar="RUN", help="the index's model where it lies now (default: as recorded)")
    parser.add_argument("--nprobe", type=int, metavar="N", help="IVF index: inverted lists to visit (default: as built)")
    parser.set_defaults(func=run)


def check_query(args: argparse.Namespace) -> None:
    """The flags of a search, before anything is read: a query, k and nprobe >= 1, an --out of a known kind."""
    from atelier.commands._folder_job import require_positive
    from atelier.utils.outputs import check_file_path

    if args.text is None and args.image is None:
        raise UserError("no query: pass --text, --image, or both (an image and its modification text)")
    if args.text is not None and not args.text.strip():
        raise UserError("--text is empty: pass the words to search for, or leave --text out for an image query")
    require_positive({"-k": args.k, "--nprobe": args.nprobe})
    if args.out is not None:
        if args.out.suffix.lower() not in (".json", ".html"):
            raise UserError(f"--out {args.out}: expected a .json or .html file name, e.g. results.html")
        check_file_path(args.out, "--out")


def query_image(text: str):
    """The --image as an RGB PIL image; UserError when it is missing or cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    path = Path(text).expanduser()
    if not path.is_file():
        raise UserError(f"--image {text} {'is a folder' if path.is_dir() else 'not found'}; expected an image file")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UserError(f"--image {text} cannot be read as an image ({error}); pass a .jpg, .png, .webp or .bmp "
                        "file") from None


def index_model(index, checkpoint: str | None):
    """The model an index was built with (its recorded checkpoint, or --checkpoint), loaded; UserError when it is
    missing or is not the model that embedded the catalogue (its fingerprint differs)."""
    from atelier.commands._retrieval import load_model, retrieval_checkpoint
    from atelier.methods.unifashion.index import model_fingerprint

    recorded = index.record.get("checkpoint") or ""
    if checkpoint is None and not Path(recorded).is_dir():
        raise UserError(f"the index's model {recorded or '(not recorded)'} is not there any more; pass --checkpoint "
                        "with the run the index was built with")
    model = load_model(retrieval_checkpoint(checkpoint or recorded))
    if model_fingerprint(model) != index.record.get("model"):
        raise UserError(f"the model at {checkpoint or recorded} is not the one this index was built with (its weights "
                        "differ); pass --checkpoint with that run, or index the catalogue again with atelier index")
    return model


def run(args: argparse.Namespace) -> int:
    from atelier.methods.unifashion.index import load_index, query_features, search

    check_query(args)
    image = query_image(args.image) if args.image is not None else None
    index = load_index(args.index)
    model = index_model(index, args.checkpoint)
    hits = search(index, query_features(model, args.text, image), args.k, args.nprobe)
    kind = "composed" if image is not None and args.text is not None else "image" if image is not None else "text"
    for rank, (path, score) in enumerate(hits, start=1):
        print(f"{rank:>3}  {score:.4f}  {path}")
    if args.out is not None:
        write_results(args, kind, hits)
        print(f"wrote {args.out}")
    return 0


def write_results(args: argparse.Namespace, kind: str, hits: list[tuple[Path, float]]) -> None:
    """--out: JSON (the query, then each hit's rank, path and score) or an HTML page of the query and the hits."""
    from atelier.commands._retrieval import figure, write_page
    from atelier.utils.io import write_json

    query = {"kind": kind, "text": args.text, "image": args.image}
    rows = [{"rank": rank, "path": str(path), "score": round(score, 6)} for rank, (path, score) in enumerate(hits, 1)]
    if args.out.suffix.lower() == ".json":
        write_json(args.out, {"index": str(args.index), "k": args.k, "query": query, "hits": rows})
        return
    shown = figure(Path(args.image), args.out, "query image") if args.image is not None else ""
    words = f"<p>{html.escape(args.text)}</p>" if args.text is not None else ""
    grid = "".join(figure(Path(row["path"]), args.out, f"#{row['rank']}  {row['score']:.4f}  {Path(row['path']).name}")
                   for row in rows)
    write_page(args.out, f"atelier search: {kind} query", f"<section class='query'>{shown}{words}</section>"
                                                          f"<h2>top {len(rows)} of {args.index}</h2><div class='grid'>{grid}</div>")
