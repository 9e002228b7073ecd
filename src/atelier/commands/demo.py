"""`atelier demo`: the main job on the embedded default; writes runs/demo/report.html."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  atelier demo                      # every stage; reuses cached data and base model on a second run
  atelier demo --task base          # one stage alone
  atelier demo --workers 1          # stages one after another (default: side by side, one per core)
  atelier demo --out /tmp/demo --fast
  atelier demo --from-scratch       # train the base model here too, as the demo did before it shipped one
stages: base (the FashionSynth text-to-image base), style (style LoRA: photo -> illustration), pose (CFLD pose transfer),
mcld (MCLD beside CFLD, and its clothes, face and pose edits), illustrate (Uni-DlLoRA vs the style LoRA: identity kept
in photo -> illustration), retrieval (UniFashion retrieval and captioning); opt-in, run only when named: tryon and
design (--task tryon --task design: about 24 minutes on 2 cores, beyond the 10 of the others; see docs/tryon.md).
The report puts each task's numbers beside a trivial baseline and marks each claim PASS or FAIL, with its margin."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the embedded-default demo and write an HTML report",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", action="append", metavar="NAME", help="run only this stage (repeatable); default: all")
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--fast", action="store_true",
                        help="tiny data, 2 training steps per model, 4 held-out images: checks the wiring in about a "
                             "minute (tests/test_demo.py); numbers not meaningful")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="stages run side by side in N processes sharing the CPU cores (default: one per core, "
                             "at most 4); 1 runs them one after another in this process")
    parser.add_argument("--from-scratch", action="store_true",
                        help="train the tiny base model in the demo (64x48, about 8 minutes on 2 cores) instead of "
                             "starting from the embedded FashionSynth base (96x64)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from atelier.demo import run_demo, task_names
    from atelier.errors import UserError
    from atelier.utils.outputs import check_folder_path

    unknown = [t for t in args.task or [] if t not in task_names()]
    if unknown:
        raise UserError(f"--task {unknown[0]!r}: expected one of {', '.join(task_names())}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: expected a whole number >= 1 (1 runs the stages one at a time)")
    check_folder_path(args.out, "--out")  # a file there, or no write permission: say so before minutes of work
    report = run_demo(args.out, args.task, fast=args.fast, from_scratch=args.from_scratch,
                      workers=args.workers)
    print(f"report: {report}")
    return 0
