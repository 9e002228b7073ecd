"""The `atelier` command line: one subcommand per module in atelier.commands, each a thin layer over a plain function.

User errors (atelier.errors.UserError) print one line and exit with code 2, clashing installed packages
(atelier.errors.DependencyError) one line and exit code 1; nothing else is caught.
"""

from __future__ import annotations

import argparse
import logging
import sys

from atelier import __version__
from atelier.commands import demo, doctor, evaluate, generate, illustrate, pose_transfer, synth, train, translate
from atelier.errors import DependencyError, UserError

# Each module defines add_parser(subparsers) registering its subcommand with `func` set to a plain function(args).
COMMAND_MODULES = [synth, train, demo, evaluate, translate, generate, pose_transfer, illustrate, doctor]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atelier",
        description="Diffusion-based fashion image synthesis: data, training, sampling and evaluation in one CLI.",
    )
    parser.add_argument("--version", action="version", version=f"atelier {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except UserError as error:
        print(f"atelier {args.command}: error: {error}", file=sys.stderr)
        return 2
    except DependencyError as error:
        print(f"atelier {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"atelier {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
