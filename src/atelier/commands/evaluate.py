"""`atelier evaluate`: score generated images, a retrieval model or generated captions under a paper's protocol; write
report.json and print a markdown table."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from atelier.data.formats.dresscode import CATEGORIES as DRESSCODE_CATEGORIES
from atelier.data.formats.fashioniq import CATEGORIES

IMAGE_PROTOCOLS = ("cfld", "mcld", "pidm", "standard", "vitonhd")  # folders of generated and ground-truth images
LAYOUT_PROTOCOLS = ("dresscode", "mgd")  # generated images against a dataset layout (--data)
PROTOCOL_NAMES = (*IMAGE_PROTOCOLS, *LAYOUT_PROTOCOLS, "fashioniq", "fashiongen", "captions")
MGD_FLAGS = ("--captions", "--sketches", "--keypoints", "--clip", "--pose-model", "--sketch-model")
FACE_FLAGS = ("--face-model", "--face-detector", "--face-keypoints")

EPILOG = """protocols:
  cfld      pose transfer as CFLD/MCLD: SSIM (uniform 51), SSIM_256, PSNR, LPIPS-alex, FID (torchvision
            Inception, real set = --real train images) + standard pytorch-fid FID for reference
  mcld      cfld plus MCLD's face identity: face_cos, face_dist (raw ArcFace embeddings of output and ground truth)
            and face_pairs, over pairs where both give a face; --face-model FILE.onnx, landmarks from
            --face-detector FILE.onnx or --face-keypoints CSV; without --face-model the face keys are missing
  pidm      pose transfer as PIDM: 256x256 PNG then bilinear to 176x256; SSIM (51), PSNR, LPIPS, FID
  standard  SSIM (Gaussian 11), PSNR, LPIPS alex+vgg, FID and KID x1000 (pytorch-fid Inception)
  vitonhd   try-on as LaDI-VTON: --setting paired (SSIM, LPIPS, FID, KID) or unpaired (FID, KID), vs test/image
  dresscode try-on on DressCode as LaDI-VTON, per category and over all: --generated GEN (GEN/<category>/X_0.jpg)
            --data DRESSCODE (ground truth <category>/images/X_0.jpg of the test persons); --category to choose
  mgd       garment design as MGD (--generated: outputs named like their person; --data: the VITON-HD or DressCode
            multimodal root): FID, KID (clean-fid) vs the test persons; clip_score with --clip DIR; pose_distance
            with --pose-model FILE (OpenPose) and pose_distance_keypoints with --keypoints DIR; sketch_distance with
            --sketch-model FILE.onnx (PiDiNet) and sketch_distance_xdog (no weights); each absent with its reason
            when its input is not given
  fashioniq composed retrieval (--checkpoint RUN --data FASHIONIQ_DIR): per category, each val triplet's query
            (reference image + "{caption 1} and {caption 2}") ranked against the category's full val gallery;
            R@10/R@50 per category, their means and the mean of both
  fashiongen cross-modal retrieval (--checkpoint RUN --data FILE.h5): FAME-ViL's 1,000 queries x 101 candidates
            (100 same-sub-category negatives, --seed), R@1/5/10 image->text and text->image and their mean; plus
            UniFashion's batch-of-100 "val100" variant as separate keys (not comparable with FAME-ViL's)
  captions  --generated CAPTIONS.json ({id or path: caption}) vs --ground-truth REFS.json ({id: [references]} or
            {id: reference}), ids matched by key then file stem: BLEU-4, ROUGE-L, CIDEr-D (coco-caption) x 100;
            METEOR with Java and the jar at $ATELIER_METEOR_JAR (meteor-1.5.jar), else reported missing

examples:
  atelier evaluate --protocol cfld --generated runs/cfld/test --ground-truth fashion/test_highres \\
      --real fashion/train_highres --pairs fashion/fasion-resize-pairs-test.csv --out runs/cfld/report.json
  atelier evaluate --protocol cfld --test-size 512x352 --generated out512 --ground-truth fashion/test_highres \\
      --real fashion/train_highres --device cuda --batch-size 64 --out report512.json
  atelier evaluate --protocol vitonhd --setting unpaired --generated out/unpaired \\
      --ground-truth VITON-HD/test/image --out unpaired.json
  atelier evaluate --protocol standard --generated gen --ground-truth gt --allow-random-weights --out smoke.json
  atelier evaluate --protocol dresscode --generated out/paired --data DressCode --out dresscode.json
  atelier evaluate --protocol mgd --setting unpaired --generated out/mgd_unpaired/images --data VITON-HD \\
      --clip clip-vit-large-patch14 --pose-model body_pose_model.pth --out mgd.json
  atelier evaluate --protocol fashioniq --checkpoint runs/composed --data fashioniq --out fiq.json
  atelier evaluate --protocol fashiongen --checkpoint runs/retrieval --data fashiongen_256_256_validation.h5 \\
      --device cuda --out fashiongen.json
  atelier evaluate --protocol captions --generated captions.json --ground-truth references.json --out captions.json
  accelerate launch -m atelier evaluate --protocol cfld ... --device cuda   (splits the files over GPUs)

weights: alexnet-owt-7be5be79.pth, vgg16-397923af.pth, inception_v3_google-0cc3c7bd.pth and
pt_inception-2015-12-05-6726825d.pth are looked up in --weights-dir, then $ATELIER_CACHE/weights
(default ~/.cache/atelier/weights), then downloaded (unless ATELIER_OFFLINE=1); all sha256-checked.
Without them LPIPS/FID/KID are reported as missing, with the reason, and the other metrics are still computed.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `evaluate` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score generated images, a retrieval model or captions with a paper's exact metric protocol",
        description="Match generated images to their ground truth by file name and compute the metrics of a "
                    "published protocol with its exact preprocessing (or score a retrieval model on FashionIQ / "
                    "FashionGen, or captions against references); writes a JSON report and prints a markdown table.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--protocol", required=True, choices=PROTOCOL_NAMES, help="metric protocol (see below)")
    parser.add_argument("--generated", type=Path, metavar="DIR|JSON",
                        help="folder of generated images (captions: the JSON of generated captions)")
    parser.add_argument("--ground-truth", type=Path, metavar="DIR|JSON",
                        help="folder of ground-truth (target) images (captions: the JSON of reference captions)")
    parser.add_argument("--checkpoint", type=Path, metavar="RUN",
                        help="fashioniq/fashiongen: a retrieval run (RUN or RUN/final) or a BLIP-2 retrieval folder")
    parser.add_argument("--data", type=Path, metavar="PATH",
                        help="fashioniq: the FashionIQ folder (captions/, image_splits/, images/); fashiongen: the "
                             "FashionGen HDF5 file; dresscode: the DressCode root; mgd: the VITON-HD or DressCode "
                             "multimodal root (MGD's captions, im_sketch/, keypoints)")
    parser.add_argument("--split", choices=("val", "train", "test"), default="val",
                        help="fashioniq: the split scored (default val, the one papers report)")
    parser.add_argument("--categories", nargs="+", choices=CATEGORIES, default=list(CATEGORIES), metavar="CATEGORY",
                        help=f"fashioniq: the categories scored (default: {' '.join(CATEGORIES)})")
    parser.add_argument("--real", type=Path, metavar="DIR",
                        help="real set for FID/KID (cfld/pidm: the training images; default for standard/vitonhd: "
                             "the ground-truth folder; mgd: the listed test persons' images)")
    parser.add_argument("--pairs", type=Path, metavar="CSV", help="pairs CSV with header from,to (names carry the source)")
    parser.add_argument("--out", required=True, type=Path, metavar="JSON", help="where to write the report")
    parser.add_argument("--setting", choices=("paired", "unpaired"), default="paired",
                        help="vitonhd, dresscode: paired (SSIM, LPIPS, FID, KID) or unpaired (FID, KID); mgd: which "
                             "garment, caption and sketch each output was made from")
    parser.add_argument("--category", nargs="+", choices=DRESSCODE_CATEGORIES, metavar="CATEGORY",
                        help="dresscode, mgd on DressCode: the categories scored (upper_body lower_body dresses; "
                             "default: dresscode every category folder in --generated, mgd all)")
    parser.add_argument("--clip", type=Path, metavar="DIR",
                        help="mgd: a transformers CLIP folder for clip_score (e.g. openai/clip-vit-large-patch14); "
                             "without it clip_score is reported missing")
    parser.add_argument("--captions", type=Path, metavar="FILE",
                        help="mgd: captions.json (garment id -> noun phrases) to use instead of the dataset's")
    parser.add_argument("--sketches", type=Path, metavar="DIR",
                        help="mgd: the input sketches, named as MGD's im_sketch/ (paired) or im_sketch_unpaired/ "
                             "files, instead of the dataset's")
    parser.add_argument("--keypoints", type=Path, metavar="DIR",
                        help="mgd: OpenPose JSON of each output (<output stem>_keypoints.json) for "
                             "pose_distance_keypoints")
    parser.add_argument("--pose-model", type=Path, metavar="FILE",
                        help="mgd: OpenPose's body model (body_pose_model.pth, or .onnx with onnxruntime) for "
                             "pose_distance")
    parser.add_argument("--sketch-model", type=Path, metavar="FILE",
                        help="mgd: PiDiNet exported to ONNX (needs onnxruntime) for sketch_distance")
    parser.add_argument("--face-model", type=Path, metavar="FILE",
                        help="mcld: an ArcFace recogniser .onnx (MCLD uses insightface's buffalo_s) for face_cos, "
                             "face_dist and face_pairs; without it they are reported missing")
    parser.add_argument("--face-detector", type=Path, metavar="FILE",
                        help="mcld: an SCRFD face detector .onnx with landmarks, to find each image's face")
    parser.add_argument("--face-keypoints", type=Path, metavar="CSV",
                        help="mcld without --face-detector: the keypoint CSV (name:keypoints_y:keypoints_x) of the "
                             "ground-truth images; the target pose's eyes and nose place the face in both images")
    parser.add_argument("--test-size", dest="size", metavar="HxW", help="test size as the papers write it, height x width (default 256x176; vitonhd, dresscode 512x384; mgd always 512x384); note: --size elsewhere is WxH")
    parser.add_argument("--weights-dir", type=Path, metavar="DIR", help="folder holding the network weight files")
    parser.add_argument("--allow-random-weights", action="store_true",
                        help="use seeded random networks when weights are missing (report stamped NOT COMPARABLE)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per network batch (default 32)")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                        help="device for the networks (default auto: cuda when available, else cpu)")
    parser.add_argument("--workers", type=int, metavar="N", help="image-loading threads (default: CPU count, max 16)")
    parser.add_argument("--fid-method", choices=("sqrtm", "eigh"), default="sqrtm",
                        help="matrix square root: sqrtm (pytorch-fid's exact code path) or eigh (faster, same value)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for KID subsets, random weights and FashionGen's query draw (default 0)")
    parser.add_argument("--no-cache", action="store_true", help="recompute real-set statistics instead of reusing them")
    parser.set_defaults(func=run)
    return parser


def _required(args: argparse.Namespace, flags: tuple[str, ...]) -> None:
    """UserError naming the first of a protocol's required flags that was not given."""
    from atelier.errors import UserError

    for flag in flags:
        if getattr(args, flag.lstrip("-").replace("-", "_")) is None:
            both = f" (it takes {' and '.join(flags)})" if len(flags) > 1 else ""
            raise UserError(f"--protocol {args.protocol} needs {flag}{both}")


def _only(args: argparse.Namespace, flags: tuple[str, ...], protocols: tuple[str, ...]) -> None:
    """UserError naming the first of `flags` given to a protocol outside `protocols`."""
    from atelier.errors import UserError

    for flag in flags:
        if args.protocol not in protocols and getattr(args, flag.lstrip("-").replace("-", "_")) is not None:
            raise UserError(f"{flag}: only --protocol {' / '.join(protocols)} uses it, not {args.protocol}")


def _layout_report(args: argparse.Namespace) -> dict:
    """dresscode / mgd: generated images against a dataset layout."""
    from atelier.errors import UserError

    _required(args, ("--generated", "--data"))
    common = {"setting": args.setting, "categories": args.category, "real": args.real,
              "weights_dir": args.weights_dir, "allow_random_weights": args.allow_random_weights,
              "batch_size": args.batch_size, "device": args.device, "workers": args.workers,
              "fid_method": args.fid_method, "seed": args.seed, "use_cache": not args.no_cache}
    if args.protocol == "dresscode":
        from atelier.metrics.tryon import evaluate_dresscode

        if args.real is not None:
            raise UserError("--real: the dresscode protocol compares each category with its own test persons "
                            "(LaDI-VTON's statistics); leave it out")
        del common["real"]
        return evaluate_dresscode(args.generated, args.data, size=args.size, **common)
    from atelier.metrics.mgd import evaluate_mgd

    if args.size is not None:
        raise UserError(f"--test-size {args.size}: the mgd protocol measures at MGD's output size, 512x384")
    return evaluate_mgd(args.generated, args.data, captions=args.captions, sketches=args.sketches,
                        keypoints=args.keypoints, clip=args.clip, pose_model=args.pose_model,
                        sketch_model=args.sketch_model, **common)


def _report(args: argparse.Namespace) -> dict:
    """The report of the chosen protocol (flags checked first, each protocol's inputs before any work)."""
    _only(args, MGD_FLAGS, ("mgd",))
    _only(args, FACE_FLAGS, ("mcld",))
    _only(args, ("--category",), LAYOUT_PROTOCOLS)
    if args.protocol in LAYOUT_PROTOCOLS:
        return _layout_report(args)
    if args.protocol == "captions":
        from atelier.metrics.caption_eval import evaluate_captions

        _required(args, ("--generated", "--ground-truth"))
        return evaluate_captions(args.generated, args.ground_truth)
    if args.protocol in ("fashioniq", "fashiongen"):
        from atelier.methods.unifashion import evaluate as retrieval
        from atelier.metrics.evaluate import resolve_device

        _required(args, ("--checkpoint", "--data"))
        options = {"batch_size": args.batch_size, "device": resolve_device(args.device)}
        if args.protocol == "fashioniq":
            return retrieval.evaluate_fashioniq(args.checkpoint, args.data, args.split, args.categories, **options)
        return retrieval.evaluate_fashiongen(args.checkpoint, args.data, args.seed, **options)
    from atelier.metrics.evaluate import evaluate

    _required(args, ("--generated",))
    return evaluate(
        args.protocol,
        args.generated,
        ground_truth=args.ground_truth,
        real=args.real,
        pairs=args.pairs,
        setting=args.setting,
        size=args.size,
        weights_dir=args.weights_dir,
        allow_random_weights=args.allow_random_weights,
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        fid_method=args.fid_method,
        seed=args.seed,
        use_cache=not args.no_cache,
        face_model=args.face_model,
        face_detector=args.face_detector,
        face_keypoints=args.face_keypoints,
    )


def run(args: argparse.Namespace) -> int:
    """Check the flags and that --out can be written (before any input is read), run the protocol, write the JSON
    report atomically (rank 0 only) and print the markdown table."""
    from atelier.errors import UserError
    from atelier.metrics.report import markdown_table
    from atelier.utils.io import write_json
    from atelier.utils.outputs import check_file_path

    if args.workers is not None and not 1 <= args.workers <= 256:
        raise UserError(f"--workers {args.workers}: expected 1..256 image-loading threads, or leave it out")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: expected an integer >= 0")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: expected a positive number of images per batch")
    check_file_path(args.out, "--out")
    report = _report(args)
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(args.out, report)
        print(markdown_table(report), end="")
        print(f"report written to {args.out}")
    return 0
