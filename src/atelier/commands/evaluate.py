"""`atelier evaluate`: score generated images under a paper's protocol; write report.json and print a markdown table."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

PROTOCOL_NAMES = ("cfld", "pidm", "standard", "vitonhd")

EPILOG = """protocols:
  cfld      pose transfer as CFLD/MCLD: SSIM (uniform 51), SSIM_256, PSNR, LPIPS-alex, FID (torchvision
            Inception, real set = --real train images) + standard pytorch-fid FID for reference
  pidm      pose transfer as PIDM: 256x256 PNG then bilinear to 176x256; SSIM (51), PSNR, LPIPS, FID
  standard  SSIM (Gaussian 11), PSNR, LPIPS alex+vgg, FID and KID x1000 (pytorch-fid Inception)
  vitonhd   try-on as LaDI-VTON: --setting paired (SSIM, LPIPS, FID, KID) or unpaired (FID, KID), vs test/image

examples:
  atelier evaluate --protocol cfld --generated runs/cfld/test --ground-truth fashion/test_highres \\
      --real fashion/train_highres --pairs fashion/fasion-resize-pairs-test.csv --out runs/cfld/report.json
  atelier evaluate --protocol cfld --test-size 512x352 --generated out512 --ground-truth fashion/test_highres \\
      --real fashion/train_highres --device cuda --batch-size 64 --out report512.json
  atelier evaluate --protocol vitonhd --setting unpaired --generated out/unpaired \\
      --ground-truth VITON-HD/test/image --out unpaired.json
  atelier evaluate --protocol standard --generated gen --ground-truth gt --allow-random-weights --out smoke.json
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
        help="score generated images with a paper's exact metric protocol (SSIM, PSNR, LPIPS, FID, KID)",
        description="Match generated images to their ground truth by file name and compute the metrics of a "
                    "published protocol with its exact preprocessing; writes a JSON report and prints a markdown table.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--protocol", required=True, choices=PROTOCOL_NAMES, help="metric protocol (see below)")
    parser.add_argument("--generated", required=True, type=Path, metavar="DIR", help="folder of generated images")
    parser.add_argument("--ground-truth", type=Path, metavar="DIR", help="folder of ground-truth (target) images")
    parser.add_argument("--real", type=Path, metavar="DIR",
                        help="real set for FID/KID (cfld/pidm: the training images; default for standard/vitonhd: "
                             "the ground-truth folder)")
    parser.add_argument("--pairs", type=Path, metavar="CSV", help="pairs CSV with header from,to (names carry the source)")
    parser.add_argument("--out", required=True, type=Path, metavar="JSON", help="where to write the report")
    parser.add_argument("--setting", choices=("paired", "unpaired"), default="paired",
                        help="vitonhd only: paired (SSIM, LPIPS, FID, KID) or unpaired (FID, KID)")
    parser.add_argument("--test-size", dest="size", metavar="HxW", help="test size as the papers write it, height x width (default 256x176; vitonhd 512x384); note: --size elsewhere is WxH")
    parser.add_argument("--weights-dir", type=Path, metavar="DIR", help="folder holding the network weight files")
    parser.add_argument("--allow-random-weights", action="store_true",
                        help="use seeded random networks when weights are missing (report stamped NOT COMPARABLE)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per network batch (default 32)")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                        help="device for the networks (default auto: cuda when available, else cpu)")
    parser.add_argument("--workers", type=int, metavar="N", help="image-loading threads (default: CPU count, max 16)")
    parser.add_argument("--fid-method", choices=("sqrtm", "eigh"), default="sqrtm",
                        help="matrix square root: sqrtm (pytorch-fid's exact code path) or eigh (faster, same value)")
    parser.add_argument("--seed", type=int, default=0, help="seed for KID subsets and random weights (default 0)")
    parser.add_argument("--no-cache", action="store_true", help="recompute real-set statistics instead of reusing them")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Check the flags and that --out can be written (before any image is read), run the evaluation, write the JSON
    report atomically (rank 0 only) and print the markdown table."""
    from atelier.errors import UserError
    from atelier.metrics.evaluate import evaluate
    from atelier.metrics.report import markdown_table
    from atelier.utils.io import write_json
    from atelier.utils.outputs import check_file_path

    if args.workers is not None and not 1 <= args.workers <= 256:
        raise UserError(f"--workers {args.workers}: expected 1..256 image-loading threads, or leave it out")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: expected an integer >= 0")
    check_file_path(args.out, "--out")
    report = evaluate(
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
    )
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(args.out, report)
        print(markdown_table(report), end="")
        print(f"report written to {args.out}")
    return 0
