"""`atelier synth`: write a FashionSynth dataset (DeepFashion layout, photo/illustration style folders, labels)."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """examples:
  atelier synth --out runs/fashionsynth
  atelier synth --out runs/fs-small --identities 10 --poses-per-identity 3 --size 88x128
  atelier synth --out runs/fashionsynth --seed 1 --test-fraction 0.25 --overwrite
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `synth` subcommand."""
    parser = subparsers.add_parser(
        "synth",
        help="generate a FashionSynth dataset (procedural fashion photos with every label known)",
        description=(
            "Render procedural people in many poses as photos and illustrations, written in the real layouts: "
            "DeepFashion/CFLD (images, lists, pairs and keypoint CSVs), captioned style folders and label maps."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (must be empty or new)")
    parser.add_argument("--identities", type=int, default=40, metavar="N", help="number of people (default 40)")
    parser.add_argument("--poses-per-identity", type=int, default=4, metavar="K", help="poses per person (default 4)")
    parser.add_argument("--size", default="176x256", metavar="WxH", help="image size (default 176x256)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--test-fraction", type=float, default=0.2, metavar="F", help="share of identities held out for test (default 0.2)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.set_defaults(func=run)
    return parser


MAX_IDENTITIES = 100_000  # a stated bound: more is hours of rendering and tens of GB, surely a typo


def check_flags(args: argparse.Namespace) -> tuple[int, int]:
    """The flags synthesize does not check itself (upper bounds, the seed) and the output folder; returns --size as
    (W, H). Runs before anything is rendered."""
    from atelier.config import MAX_IMAGE_SIDE
    from atelier.data.transforms import parse_size
    from atelier.errors import UserError
    from atelier.utils.outputs import check_folder_path, check_overwritable

    size = parse_size(args.size, "--size")
    if max(size) > MAX_IMAGE_SIDE:
        raise UserError(f"--size {args.size}: each side must be at most {MAX_IMAGE_SIDE} px, e.g. 176x256")
    if args.identities > MAX_IDENTITIES:
        raise UserError(f"--identities {args.identities}: expected at most {MAX_IDENTITIES:,} people")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: expected an integer >= 0")
    check_folder_path(args.out, "--out")
    if not (args.out / "fashionsynth.json").is_file():  # FashionSynth folders made before markers are synth outputs
        check_overwritable(args.out, "synth")
    return size


def run(args: argparse.Namespace) -> int:
    """Check the flags, call synthesize and print a one-paragraph summary; mark the folder as a synth output."""
    from atelier.data.synth import synthesize
    from atelier.utils.outputs import write_marker

    size = check_flags(args)
    summary = synthesize(
        args.out,
        identities=args.identities,
        poses_per_identity=args.poses_per_identity,
        size=size,
        seed=args.seed,
        test_fraction=args.test_fraction,
        overwrite=args.overwrite,
    )
    write_marker(args.out, "synth")
    images, pairs, people = summary.images, summary.pairs, summary.identities
    print(
        f"FashionSynth wrote {images['train'] + images['test']} images ({images['train']} train, {images['test']} test) "
        f"of {people['train'] + people['test']} identities ({people['train']} train, {people['test']} test) in "
        f"{summary.seconds:.1f} s: DeepFashion layout with {pairs['train']} train and {pairs['test']} test pairs in "
        f"{summary.deepfashion}, photo and illustration style folders in {summary.style}, parse maps, garment masks "
        f"and attributes in {summary.labels}."
    )
    return 0
