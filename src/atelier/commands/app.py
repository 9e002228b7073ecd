"""`atelier app`: the web app (gradio), one tab per built task, on the demo's models or any run."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

EPILOG = """examples:
  atelier app                                   # http://127.0.0.1:7860, the models `atelier demo` trained (runs/demo)
  atelier app --checkpoints runs/demo runs/mine --port 8000
  atelier app --host 0.0.0.0 --max-upload-mb 50  # reachable from other machines: mind who can reach it
Tabs: Translate (style LoRA), Illustrate (Uni-DlLoRA), Pose transfer (CFLD), Try-on and Design, Search and Caption
(UniFashion), Evaluate (the image protocols). Each runs the
same command as the CLI and writes WORKDIR/<task>/<time>-<n>/ (inputs/, out/ with the outputs, grid and settings.json).
Models are found under --checkpoints (every training run's final/), load on first use and stay loaded (--keep-models).
Needs gradio: pip install 'atelier[app]' (make install includes it)."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("app", help="the web app: a tab per task (translate, illustrate, pose transfer, try-on, design, search, caption, evaluate)",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--checkpoints", nargs="+", type=Path, default=[Path("runs/demo")], metavar="DIR",
                        help="folders to search for training runs (default runs/demo, what `atelier demo` trains)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/app"), metavar="DIR",
                        help="where each request's inputs and outputs are written (default runs/app)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, metavar="MB", help="largest upload per file (default 20)")
    parser.add_argument("--max-side", type=int, default=4096, metavar="PX", help="largest image side accepted (default 4096)")
    parser.add_argument("--keep-models", type=int, default=4, metavar="N", help="models kept loaded between requests (default 4)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default; needs internet)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from atelier.errors import DependencyError, UserError

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: expected 1..65535")
    if not args.max_upload_mb > 0:
        raise UserError(f"--max-upload-mb {args.max_upload_mb}: expected a size in MB above 0")
    if args.max_side < 64:
        raise UserError(f"--max-side {args.max_side}: expected at least 64 px")
    if args.keep_models < 1:
        raise UserError(f"--keep-models {args.keep_models}: expected at least 1")
    for folder in args.checkpoints:
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--checkpoints {folder}: a file; expected a folder holding training runs")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio polls itself once a start; not news
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise DependencyError(f"atelier app needs gradio ({error}); install it with pip install 'atelier[app]'") from None
    from atelier.app.checkpoints import find_checkpoints
    from atelier.app.jobs import AppContext, Workspace
    from atelier.app.ui import launch
    from atelier.app.uploads import Limits
    from atelier.utils.kept import keep_models
    from atelier.utils.outputs import check_folder_path

    check_folder_path(args.workdir, "--workdir")
    keep_models(args.keep_models)
    found = find_checkpoints(args.checkpoints)
    ctx = AppContext(Workspace(args.workdir), Limits(max_bytes=int(args.max_upload_mb * 2**20), max_side=args.max_side),
                     list(args.checkpoints), found)
    print(f"atelier app: {len(found)} runs found under {' '.join(map(str, args.checkpoints))}: "
          + (", ".join(f"{c.label} ({c.task})" for c in found) or "none (each tab says how to train one)"))
    launch(ctx, args.host, args.port, share=args.share)
    return 0
