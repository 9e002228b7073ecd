"""`atelier synth`: write a FashionSynth dataset (DeepFashion layout, photo/illustration style folders, labels) and,
with --retrieval, its garments as products in the FashionIQ and FashionGen layouts."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """examples:
  atelier synth --out runs/fashionsynth
  atelier synth --out runs/fs-small --identities 10 --poses-per-identity 3 --size 88x128
  atelier synth --out runs/fashionsynth --seed 1 --test-fraction 0.25 --overwrite
  atelier synth --out runs/fs-retrieval --retrieval                 # also OUT/retrieval/ (products, FashionIQ, FashionGen)
  atelier synth --out runs/fs-retrieval --retrieval --retrieval-size 128x128
  atelier synth --out runs/fs-tryon --tryon --tryon-size 384x512       # also OUT/tryon/ (the VITON-HD layout)
  atelier synth --out runs/fs-mcld --conditions                       # also MCLD's conditions (needs atelier[mcld])

--conditions writes MCLD's conditions beside the DeepFashion images, with every value known: OUT/deepfashion/
{train,test}_densepose/<name>.png (the DensePose IUV truth, stored as MCLD stores IUVs), {train,test}_texture/
<name>.png (the identity's true UV texture as a 512x512 SMPL texture) and {train,test}_face/<name>.npy (an identity
embedding of 14 floats standing in for ArcFace; zeros for a back view), and OUT/labels/texture_atlas/ (each identity's
true 24-part atlas). The part map and the vector's layout: docs/mcld.md. Needs pip install 'atelier[mcld]'.

--retrieval writes OUT/retrieval/: products/<asin>.png (each garment alone on white), fashioniq/ (images,
image_splits, captions with triplets and cap.{cat}.{split}.caption.json absolute captions), fashiongen/
fashiongen_256_256_{train,validation}.h5 and retrieval.json (every product's attributes and every triplet's answer).
Dresses are FashionIQ `dress`, long-sleeved tops `shirt`, short-sleeved tops `toptee`; held-out identities are
split between FashionIQ val and test (FashionGen validation), so it needs at least 2 of them.

--tryon writes OUT/tryon/ in the VITON-HD layout with MGD's additions: one frontal photo per identity wearing a top
(dress wearers are skipped), its top alone on white and its mask, agnostic image and mask, parse map, a
DensePose-style image, BODY_25 OpenPose JSON, sketches, captions.json; train pairs each person with their own top,
test pairs with another test person's, so it needs at least 2 held-out people wearing a top.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `synth` subcommand."""
    parser = subparsers.add_parser(
        "synth",
        help="generate a FashionSynth dataset (procedural fashion photos with every label known)",
        description=(
            "Render procedural people in many poses as photos and illustrations, written in the real layouts: "
            "DeepFashion/CFLD (images, lists, pairs and keypoint CSVs), captioned style folders and label maps; with "
            "--retrieval also product photos in the FashionIQ and FashionGen retrieval layouts."
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
    parser.add_argument("--retrieval", action="store_true", help="also write OUT/retrieval/: products in the FashionIQ and FashionGen layouts")
    parser.add_argument("--retrieval-size", default="256x256", metavar="WxH", help="product image size for --retrieval (default 256x256)")
    parser.add_argument("--tryon", action="store_true", help="also write OUT/tryon/: the VITON-HD try-on layout")
    parser.add_argument("--tryon-size", default="192x256", metavar="WxH", help="image size for --tryon (default 192x256)")
    parser.add_argument("--conditions", action="store_true", help="also write MCLD's conditions (DensePose IUV, true texture, identity embedding) beside the DeepFashion images")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.set_defaults(func=run)
    return parser


MAX_IDENTITIES = 100_000  # a stated bound: more is hours of rendering and tens of GB, surely a typo


def check_flags(args: argparse.Namespace) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """The flags synthesize does not check itself (upper bounds, the seed, --retrieval's and --tryon's splits) and the output folder;
    returns --size, --retrieval-size and --tryon-size as (W, H). Runs before anything is rendered."""
    from atelier.config import MAX_IMAGE_SIDE
    from atelier.data.synth.retrieval import retrieval_splits
    from atelier.data.synth.tryon import tryon_splits
    from atelier.data.transforms import parse_size
    from atelier.errors import UserError
    from atelier.utils.outputs import check_folder_path, check_overwritable

    size = parse_size(args.size, "--size")
    if max(size) > MAX_IMAGE_SIDE:
        raise UserError(f"--size {args.size}: each side must be at most {MAX_IMAGE_SIDE} px, e.g. 176x256")
    retrieval_size = parse_size(args.retrieval_size, "--retrieval-size", minimum=32, maximum=MAX_IMAGE_SIDE)
    tryon_size = parse_size(args.tryon_size, "--tryon-size", minimum=32, maximum=MAX_IMAGE_SIDE)
    if args.identities > MAX_IDENTITIES:
        raise UserError(f"--identities {args.identities}: expected at most {MAX_IDENTITIES:,} people")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: expected an integer >= 0")
    if args.retrieval:
        retrieval_splits(args.identities, args.seed, args.test_fraction)
    if args.tryon:
        tryon_splits(args.identities, args.seed, args.test_fraction)
    check_folder_path(args.out, "--out")
    if not (args.out / "fashionsynth.json").is_file():  # FashionSynth folders made before markers are synth outputs
        check_overwritable(args.out, "synth")
    return size, retrieval_size, tryon_size


def run(args: argparse.Namespace) -> int:
    """Check the flags, call synthesize (and write_retrieval with --retrieval, write_tryon with --tryon) and print a one-paragraph summary; mark
    the folder as a synth output."""
    from atelier.data.synth import synthesize, write_retrieval
    from atelier.data.synth.tryon import write_tryon
    from atelier.utils.outputs import write_marker

    size, retrieval_size, tryon_size = check_flags(args)
    summary = synthesize(
        args.out,
        identities=args.identities,
        poses_per_identity=args.poses_per_identity,
        size=size,
        seed=args.seed,
        test_fraction=args.test_fraction,
        overwrite=args.overwrite,
        conditions=args.conditions,
    )
    write_marker(args.out, "synth")
    images, pairs, people = summary.images, summary.pairs, summary.identities
    print(
        f"FashionSynth wrote {images['train'] + images['test']} images ({images['train']} train, {images['test']} test) "
        f"of {people['train'] + people['test']} identities ({people['train']} train, {people['test']} test) in "
        f"{summary.seconds:.1f} s: DeepFashion layout with {pairs['train']} train and {pairs['test']} test pairs in "
        f"{summary.deepfashion}, photo and illustration style folders in {summary.style}, parse maps, garment masks "
        f"and attributes in {summary.labels}."
        + (" MCLD's conditions (DensePose IUV, true textures, identity embeddings) beside the DeepFashion images."
           if args.conditions else "")
    )
    if args.retrieval:
        found = write_retrieval(args.out / "retrieval", args.identities, retrieval_size, args.seed, args.test_fraction,
                                overwrite=True)
        products, triplets = found.images, found.triplets
        print(
            f"Retrieval: {sum(products.values())} products ({products['train']} train, {products['val']} val, "
            f"{products['test']} test) at {retrieval_size[0]}x{retrieval_size[1]} in {found.seconds:.1f} s: FashionIQ "
            f"layout with {triplets['train']} train, {triplets['val']} val and {triplets['test']} test triplets in "
            f"{found.fashioniq}, FashionGen train/validation HDF5 in {found.fashiongen}, ground truth in "
            f"{found.out / 'retrieval.json'}."
        )
    if args.tryon:
        tryon = write_tryon(args.out / "tryon", args.identities, tryon_size, args.seed, args.test_fraction, overwrite=True)
        people, pairs = tryon.identities, tryon.pairs
        print(
            f"Try-on: {people['train'] + people['test']} people wearing a top ({people['train']} train, "
            f"{people['test']} test; {tryon.skipped} dress wearers skipped) at {tryon_size[0]}x{tryon_size[1]} in "
            f"{tryon.seconds:.1f} s: VITON-HD layout with {pairs['train']} train and {pairs['test']} unpaired test "
            f"pairs, MGD captions and sketches in {tryon.out}."
        )
    return 0
