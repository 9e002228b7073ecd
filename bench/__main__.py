"""`python -m bench` (or `make bench`): run every benchmark script in bench/ in turn, then print their results.

Each script is runnable alone (`python bench/NAME.py --help`), measures ours against the reference approach in the
same run, and writes bench/results/NAME.json with the machine, library versions and date.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    only = set(argv)
    scripts = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_") and (not only or p.stem in only))
    failed = []
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        started = time.time()
        code = subprocess.call([sys.executable, str(script)])
        print(f"--- {script.stem}: exit {code}, {time.time() - started:.0f} s", flush=True)
        if code:
            failed.append(script.stem)
    print("\nresults:")
    for result in sorted((HERE / "results").glob("*.json")):
        data = json.loads(result.read_text())
        headline = {k: v for k, v in data.items() if isinstance(v, (int, float, str)) and k not in ("date", "machine")}
        print(f"  {result.stem}: {json.dumps(headline)[:300]}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
