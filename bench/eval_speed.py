"""Throughput of the paired metrics (SSIM win 51 + PSNR) against the reference approach of CFLD's test script.

Reference: for every batch, CFLD's `build_metric` loops over images calling scikit-image's
`structural_similarity(data_range=1, win_size=51, channel_axis=0)` and `peak_signal_noise_ratio(data_range=1)` on
float32 CHW arrays. Ours: `atelier.metrics.ssim.SSIMEngine` (one compiled numba pass per image, exact window sums)
over the same batches in a thread pool, as `atelier evaluate` runs it in its loader threads. Both get the same image
pairs: FashionSynth pose-transfer pairs (a freshly synthesised DeepFashion-layout set, 64 identities x 4 poses at
256x176; "generated" = the source pose's photo, ground truth = the target pose's photo, as a copy-the-source baseline
would score; all decoded once, outside the timed region) and are timed batch by batch, interleaved, so a busy machine slows both alike; the max abs difference of the two sets of numbers
is printed, and ours is also checked against scikit-image in float64.

The kernels' one-time compile cost is kept out of the timed region and reported on its own: "cold" is the first call
in a fresh process with an empty numba cache (what the first run on a machine pays), "this process" the first call
here (normally a load from the on-disk cache, `cache=True`).

    python bench/eval_speed.py [--pairs 2000] [--size 256x176] [--workers N]

Writes bench/results/eval_speed.json (machine, versions, date, times, ratio, compile seconds). Importable:
`run(pairs, size_hw, workers)` returns the same dict without "machine".
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

BATCH = 32  # CFLD's TEST.MICRO_BATCH_SIZE scale


class FashionSynthPairs:
    """uint8 (3, H, W) FashionSynth photos (every pose of every identity), cycled through as (source, target) pairs.

    Files are ordered by the `id<identity>_<pose><view>` tail of their DeepFashion names, so each identity's poses sit
    next to each other.
    """

    def __init__(self, size_hw: tuple[int, int], identities: int = 64, poses: int = 4) -> None:
        from atelier.data.synth import synthesize
        from atelier.data.transforms import open_rgb

        height, width = size_hw
        with tempfile.TemporaryDirectory(prefix="eval-bench-") as folder:
            synthesize(Path(folder), identities=identities, poses_per_identity=poses, size=(width, height))
            files = sorted((Path(folder) / "deepfashion").glob("*_highres/*.jpg"), key=lambda f: f.name.split("id", 1)[1])
            self.images = np.stack([np.asarray(open_rgb(f), dtype=np.uint8).transpose(2, 0, 1) for f in files])
        self.poses = poses

    def batch(self, index: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Pairs index*BATCH ... +count: pair k is (pose a, pose b != a) of identity k // (poses * (poses - 1))."""
        generated, truth = [], []
        per_identity = self.poses * (self.poses - 1)
        for k in range(index * BATCH, index * BATCH + count):
            identity, combo = divmod(k % (len(self.images) // self.poses * per_identity), per_identity)
            source, step = divmod(combo, self.poses - 1)
            target = (source + 1 + step) % self.poses
            generated.append(self.images[identity * self.poses + source])
            truth.append(self.images[identity * self.poses + target])
        return np.stack(generated), np.stack(truth)


def reference_batch(generated: np.ndarray, truth: np.ndarray) -> tuple[list, list]:
    """CFLD's loop: per image scikit-image SSIM (win 51) and PSNR on float32 [0,1] CHW arrays."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    gts, preds = truth.astype(np.float32) / 255.0, generated.astype(np.float32) / 255.0
    ssim, psnr = [], []
    for gt, pred in zip(gts, preds):
        psnr.append(peak_signal_noise_ratio(gt, pred, data_range=1))
        ssim.append(structural_similarity(gt, pred, data_range=1, win_size=51, channel_axis=0))
    return ssim, psnr


class Ours:
    """The evaluation's pair metrics: one SSIMEngine (stateless, GIL released) shared by a thread pool."""

    def __init__(self, shape: tuple[int, int, int], workers: int) -> None:
        from atelier.metrics.protocols import UNIFORM_51
        from atelier.metrics.ssim import SSIMEngine

        self.engine = SSIMEngine(shape, [UNIFORM_51], integer=True)
        self.pool = ThreadPoolExecutor(workers) if workers > 1 else None

    def _one(self, pair: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
        scores, psnr = self.engine(*pair)
        return scores[0], psnr

    def batch(self, generated: np.ndarray, truth: np.ndarray) -> tuple[list, list]:
        pairs = list(zip(generated, truth))
        results = list(self.pool.map(self._one, pairs)) if self.pool else [self._one(p) for p in pairs]
        return [r[0] for r in results], [r[1] for r in results]

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown()


_COLD_COMPILE = """
import sys, time
import numpy as np
from atelier.metrics.protocols import UNIFORM_51
from atelier.metrics.ssim import SSIMEngine
shape = (3, int(sys.argv[1]), int(sys.argv[2]))
engine = SSIMEngine(shape, [UNIFORM_51], integer=True)
image = np.zeros(shape, np.uint8)
start = time.perf_counter()
engine(image, image)
print(time.perf_counter() - start)
"""


def cold_compile_seconds(size_hw: tuple[int, int]) -> float:
    """First call of the engine in a fresh process whose numba cache is empty: the full one-time compile cost."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)  # numba looks here before the in-tree __pycache__
        done = subprocess.run([sys.executable, "-c", _COLD_COMPILE, *map(str, size_hw)], env=env, check=True,
                              capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def _warm_up(ours: Ours, data: FashionSynthPairs) -> float:
    """First call in this process (compile, or load from numba's cache) and thread start, outside the timings."""
    start = time.perf_counter()
    ours.batch(*data.batch(0, 2))
    return time.perf_counter() - start


def run(pairs: int, size_hw: tuple[int, int], workers: int, cold_compile: bool = True) -> dict:
    """Time both approaches over the same batches; return the numbers for the table and the JSON."""
    from skimage.metrics import structural_similarity

    compile_seconds = {"cold": round(cold_compile_seconds(size_hw), 3) if cold_compile else None}
    ours = Ours((3, *size_hw), workers)
    data = FashionSynthPairs(size_hw)
    compile_seconds["first_call_this_process"] = round(_warm_up(ours, data), 3)
    times = {"reference": 0.0, "ours": 0.0}
    cpu = {"reference": 0.0, "ours": 0.0}
    values = {"reference": ([], []), "ours": ([], [])}
    exactness = 0.0
    for index, start in enumerate(range(0, pairs, BATCH)):
        generated, truth = data.batch(index, min(BATCH, pairs - start))
        for name, fn in (("reference", reference_batch), ("ours", ours.batch)):
            wall, proc = time.perf_counter(), time.process_time()
            ssim, psnr = fn(generated, truth)
            times[name] += time.perf_counter() - wall
            cpu[name] += time.process_time() - proc
            values[name][0].extend(ssim)
            values[name][1].extend(psnr)
        if index == 0:  # ours against scikit-image in float64 (the reference above runs in float32)
            exact = [structural_similarity(t / 255.0, g / 255.0, data_range=1, win_size=51, channel_axis=0)
                     for g, t in zip(generated[:4], truth[:4])]
            exactness = float(np.abs(np.array(values["ours"][0][:4]) - exact).max())
    ours.close()
    ssim_diff = float(np.abs(np.array(values["ours"][0]) - np.array(values["reference"][0])).max())
    psnr_diff = float(np.abs(np.array(values["ours"][1]) - np.array(values["reference"][1])).max())
    return {"pairs": pairs, "size": f"{size_hw[0]}x{size_hw[1]}", "workers": workers,
            "seconds": {k: round(v, 3) for k, v in times.items()},
            "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
            "speedup": round(times["reference"] / times["ours"], 2),
            "cpu_speedup": round(cpu["reference"] / cpu["ours"], 2),
            "compile_seconds": compile_seconds,
            "max_abs_diff": {"ssim_vs_reference_float32": ssim_diff, "psnr_vs_reference_float32": psnr_diff,
                             "ssim_vs_skimage_float64": exactness},
            "mean": {"ssim": float(np.mean(values["ours"][0])), "psnr": float(np.mean(values["ours"][1]))}}


def machine() -> dict:
    """Where the numbers were measured."""
    import numba
    import scipy
    import skimage
    import torch

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform(),
            "cpu": model, "cpu_count": os.cpu_count(), "load_average_1min": load, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "scikit_image": skimage.__version__,
            "numba": numba.__version__, "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2000, help="image pairs to score (default 2000)")
    parser.add_argument("--size", default="256x176", help="HxW (default 256x176)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads for ours (default: CPU count)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_speed.json")
    args = parser.parse_args(argv)
    from atelier.metrics.images import parse_size
    from atelier.utils.io import write_json

    result = run(args.pairs, parse_size(args.size, "--size"), args.workers)
    result["machine"] = machine()
    seconds, cpu, compiled = result["seconds"], result["cpu_seconds"], result["compile_seconds"]
    print(f"SSIM (win 51) + PSNR on {args.pairs} pairs at {args.size}, {args.workers} worker thread(s), "
          f"load average {result['machine']['load_average_1min']}\n")
    print("| approach | wall s | pairs/s | CPU s | one-time compile s (cold / this process) |\n|---|---|---|---|---|")
    print(f"| scikit-image per image (CFLD loop) | {seconds['reference']:.2f} | "
          f"{args.pairs / seconds['reference']:.0f} | {cpu['reference']:.2f} | - |")
    print(f"| atelier SSIMEngine (numba) | {seconds['ours']:.2f} | {args.pairs / seconds['ours']:.0f} | "
          f"{cpu['ours']:.2f} | {compiled['cold']:.2f} / {compiled['first_call_this_process']:.2f} |")
    print(f"\nspeed-up: {result['speedup']}x wall clock, {result['cpu_speedup']}x CPU time")
    diffs = result["max_abs_diff"]
    print(f"max abs difference vs the reference (float32): SSIM {diffs['ssim_vs_reference_float32']:.2e}, "
          f"PSNR {diffs['psnr_vs_reference_float32']:.2e} dB; ours vs scikit-image float64: "
          f"{diffs['ssim_vs_skimage_float64']:.2e}")
    write_json(args.out, result)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
