"""FashionSynth speed: images per second for photo + illustration + labels at 176x256, against 60 s per 1,000 images.

    python bench/synth_speed.py [--images 1000] [--poses-per-identity 4] [--workers N]

Writes bench/results/synth_speed.json (machine, versions, date, numbers).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import tempfile
from pathlib import Path

TARGET_SECONDS_PER_1000 = 60.0
RESULTS = Path(__file__).resolve().parent / "results" / "synth_speed.json"


def main(argv: list[str] | None = None) -> int:
    """Synthesise into a temporary folder, print the rate and save the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images to render (default 1000)")
    parser.add_argument("--poses-per-identity", type=int, default=4, help="poses per identity (default 4)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: up to 2)")
    args = parser.parse_args(argv)

    import numpy
    import PIL
    import scipy

    from atelier import __version__
    from atelier.data.synth import synthesize
    from atelier.utils.io import write_json

    identities = max(2, math.ceil(args.images / args.poses_per_identity))
    with tempfile.TemporaryDirectory(prefix="fashionsynth-bench-") as folder:
        summary = synthesize(Path(folder) / "out", identities=identities, poses_per_identity=args.poses_per_identity, workers=args.workers)
    images = summary.images["train"] + summary.images["test"]
    seconds_per_1000 = summary.seconds / images * 1000
    verdict = "meets" if seconds_per_1000 <= TARGET_SECONDS_PER_1000 else "MISSES"
    print(
        f"FashionSynth: {images} images (photo + illustration + labels, 176x256) in {summary.seconds:.1f} s = "
        f"{images / summary.seconds:.1f} images/s; {seconds_per_1000:.1f} s per 1,000 images {verdict} the "
        f"{TARGET_SECONDS_PER_1000:.0f} s target"
    )
    write_json(RESULTS, {
        "benchmark": "synth_speed",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()},
        "versions": {"python": sys.version.split()[0], "atelier": __version__, "numpy": numpy.__version__,
                     "pillow": PIL.__version__, "scipy": scipy.__version__},
        "settings": {"images": images, "identities": identities, "poses_per_identity": args.poses_per_identity,
                     "size": [176, 256], "workers": args.workers or "auto"},
        "results": {"seconds": round(summary.seconds, 3), "images_per_second": round(images / summary.seconds, 2),
                    "seconds_per_1000_images": round(seconds_per_1000, 2), "target_seconds_per_1000_images": TARGET_SECONDS_PER_1000,
                    "meets_target": seconds_per_1000 <= TARGET_SECONDS_PER_1000},
    })  # fmt: skip
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
