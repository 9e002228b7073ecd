"""The `atelier` command line: one subcommand per module in atelier.commands, each a thin layer over a plain function.

Errors end in one line, `atelier COMMAND: error: ...`, and an exit code (this is the one place that decides them):
- 2, the user's input: atelier.errors.UserError (the message names the file, field or flag), and the OSErrors a path
  given by the user causes (not found, permission denied, read-only, a folder where a file was expected or the
  reverse), and text files that are not UTF-8;
- 1, the machine's state: clashing installed packages (atelier.errors.DependencyError), a full disk, no memory, any
  other OSError.
`--debug` (or ATELIER_DEBUG=1) prints the traceback above that line, for bug reports. Any other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback

from atelier import __version__
from atelier.commands import (
    app,
    caption,
    demo,
    doctor,
    edit,
    evaluate,
    generate,
    illustrate,
    index,
    pose_transfer,
    prepare_conditions,
    prepare_tryon,
    search,
    synth,
    train,
    translate,
    tryon,
)
from atelier.errors import DependencyError, UserError

# Each module defines add_parser(subparsers) registering its subcommand with `func` set to a plain function(args).
COMMAND_MODULES = [synth, prepare_tryon, prepare_conditions, train, demo, evaluate, translate, generate, pose_transfer, edit,
                   tryon,
                   illustrate,
                   index, search, caption, app, doctor]
DEBUG_HINT = "(--debug shows the traceback)"
MACHINE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                  errno.ENOMEM: "out of memory", errno.EMFILE: "too many open files", errno.EIO: "input/output error"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atelier",
        description="Diffusion-based fashion image synthesis: data, training, sampling and evaluation in one CLI.",
    )
    parser.add_argument("--version", action="version", version=f"atelier {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    debug_help = "on an error, print the full traceback (for bug reports; also ATELIER_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parser(subparsers)
    for subparser in subparsers.choices.values():  # also after the command; SUPPRESS keeps a global --debug
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def describe_os_error(error: OSError) -> tuple[str, int]:
    """One line for an OSError, naming its file and the fix, and the exit code: 2 when the path is the user's
    mistake, 1 when the machine is at fault."""
    path = error.filename if error.filename is not None else "a file"
    if error.filename2 is not None:
        path = f"{error.filename} -> {error.filename2}"
    if error.errno in MACHINE_ERRNOS:
        return f"{MACHINE_ERRNOS[error.errno]} while writing or reading {path}; free some space/resources or choose " \
               "another output location", 1
    if isinstance(error, FileNotFoundError):
        return f"{path} not found; check the path", 2
    if isinstance(error, IsADirectoryError):
        return f"{path} is a folder; expected a file", 2
    if isinstance(error, NotADirectoryError):
        return f"{path}: part of this path is a file, expected a folder; check the path", 2
    if isinstance(error, PermissionError):
        return f"{path}: permission denied; fix its permissions or choose another path", 2
    if error.errno == errno.EROFS:
        return f"{path}: read-only file system; choose a writable location", 2
    if error.errno == errno.ENAMETOOLONG:
        return f"{path}: file name too long; choose a shorter path", 2
    return f"{path}: {error.strerror or error}", 1


def describe(error: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit code for an error the CLI reports, None for a bug (traceback kept)."""
    if isinstance(error, UserError):
        return str(error), 2
    if isinstance(error, DependencyError):
        return str(error), 1
    if isinstance(error, OSError):
        message, code = describe_os_error(error)
        return f"{message} {DEBUG_HINT}", code
    if isinstance(error, UnicodeDecodeError):
        notes = getattr(error, "__notes__", None)  # a reader may add the file's path as a note (Python 3.11+)
        where = notes[0] if notes else "an input file (a config, caption or CSV file)"
        return (f"{where} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8 {DEBUG_HINT}", 2)
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":  # torch's CUDA OOM too
        return (f"out of memory ({str(error).splitlines()[0][:120] if str(error) else 'MemoryError'}); use smaller "
                f"sizes, batches or fewer images {DEBUG_HINT}", 1)
    return None


def debug_enabled(args: argparse.Namespace | None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("ATELIER_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print(f"atelier {args.command}: interrupted", file=sys.stderr)
        return 130
    except (UserError, DependencyError, OSError, UnicodeDecodeError, MemoryError, RuntimeError) as error:
        described = describe(error)
        if described is None:
            raise
        if debug_enabled(args):
            traceback.print_exc()
        message, code = described
        print(f"atelier {args.command}: error: {message}", file=sys.stderr)
        return code
    return int(result or 0)
