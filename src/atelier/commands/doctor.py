"""`atelier doctor`: the installed versions, the device, differences from the tested lock and known-bad combinations."""

from __future__ import annotations

import argparse
import platform
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor", help="print package versions, the device and any known-bad combination (for bug reports)",
        description="Prints the versions atelier's results depend on, the device torch sees, where the installed set "
                    "differs from the tested lock (requirements/lock.txt, in a source checkout) and every known-bad "
                    "combination with its fix. Exit code 1 when a known-bad combination is installed.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from atelier import __version__
    from atelier.environment import LOCK_FILE, device_summary, known_issues, lock_pins, versions

    found = versions()
    pins = lock_pins()
    print(f"atelier {__version__}, Python {platform.python_version()} ({sys.executable})")
    for name, version in found.items():
        locked = pins.get(name)
        note = f"   (lock: {locked})" if locked and version and locked != version.split("+")[0] else ""
        print(f"  {name:<13} {version or 'not installed'}{note}")
    print(f"  {'device':<13} {device_summary()}")
    print(f"lock: {LOCK_FILE}" if pins else "lock: none found (installed from a wheel, not a source checkout)")
    issues = known_issues(found)
    for issue in issues:
        print(f"known issue ({' + '.join(issue.packages)}): {issue.breaks}. Fix: {issue.fix}")
    if not issues:
        print("no known-bad combination installed")
    return 1 if issues else 0
