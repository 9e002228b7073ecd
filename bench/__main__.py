"""`python -m bench` (or `make bench`): the speed suite, one table (see bench/suite.py and `python -m bench --help`).

`python -m bench --scripts [NAME ...]` instead runs the standalone benchmark scripts in bench/ (eval_speed, pose_speed,
retrieval_speed, style_lora_throughput, synth_speed; all, or those named) in turn, each writing its own bench/results/NAME.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = sorted(p.stem for p in HERE.glob("*.py") if not p.name.startswith("_") and p.stem != "suite")


def run_scripts(names: list[str]) -> int:
    """Run the named scripts (all when none) as separate processes; print their headline results."""
    unknown = sorted(set(names) - set(SCRIPTS))
    if unknown:
        print(f"--scripts {' '.join(unknown)}: unknown; expected some of {', '.join(SCRIPTS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names or SCRIPTS:
        print(f"\n=== {name} ===", flush=True)
        started = time.time()
        code = subprocess.call([sys.executable, str(HERE / f"{name}.py")])
        print(f"--- {name}: exit {code}, {time.time() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
    print("\nresults:")
    for result in sorted((HERE / "results").glob("*.json")):
        if result.stem in (names or SCRIPTS):
            data = json.loads(result.read_text())
            headline = {k: v for k, v in data.items() if isinstance(v, (int, float, str)) and k not in ("date", "machine")}
            print(f"  {result.stem}: {json.dumps(headline)[:300]}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--scripts"]:
        return run_scripts(argv[1:])
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # transformers' notes on torchvision-less image processors
    from bench.suite import main as suite

    return suite(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
