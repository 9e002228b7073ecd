"""`atelier train CONFIG.yaml [KEY=VALUE ...]`: run one task's training with the shared loop."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """examples:
  atelier train configs/fashionsynth-base.yaml --out runs/fashionsynth-base     (the embedded base, every stage)
  atelier train configs/tiny-text2img.yaml data.root=runs/demo/data/style/photo --out runs/base
  atelier train configs/tiny-text2img.yaml train.lr=2e-4 train.max_steps=200 --out runs/base --resume
overrides are dotted keys of the YAML (train.lr=1e-4); the resolved config is saved as RUN/config.yaml and in every
checkpoint. RUN/checkpoints/step-N/ are written atomically; --resume continues from the newest one exactly (a damaged
one is skipped for the one before, with a warning). --overwrite deletes only an atelier run folder (it carries
.atelier-run.json), and --out may not be or contain the config's data."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a task from a YAML config (shared loop, resumable)",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config with a `task:` key (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.lr=1e-4")
    parser.add_argument("--out", help="run folder (default: runs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over: delete the run folder first (only an atelier run folder)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from atelier.registry import RECIPES, build_task, load_config
    from atelier.training.loop import train
    from atelier.training.run_dir import prepare_run_dir

    config = load_config(args.config, args.overrides)
    run_dir = Path(args.out or Path("runs") / Path(args.config).stem)
    prepare_run_dir(run_dir, config, resume=args.resume, overwrite=args.overwrite)  # before any work
    if config.task in RECIPES:
        release = RECIPES[config.task][1](config, run_dir)
        print(f"trained {config.task}: every stage done in {run_dir}; released model: {release}")
        return 0
    task = build_task(config)
    result = train(task, config.train, run_dir, resume=args.resume, config=config)
    print(f"trained {config.task}: {result.steps} steps, final loss {result.final_loss:.4f}, {result.seconds:.0f} s")
    print(f"outputs: {run_dir / 'final'}   loss curve: {run_dir / 'loss.png'}")
    return 0
