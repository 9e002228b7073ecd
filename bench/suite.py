"""atelier's speed suite: one table of ours against the reference, measured side by side in the same run.

    python -m bench [--size tiny|sd15] [--only t2i translate train pose eval] [--quick] [--compile] [--repeats N]
                    [--device DEVICE] [--out DIR]

Rows: text-to-image and translate latency (30 and 50 steps, batch 1 and 8; translate at strength 0.75) against
diffusers' plain pipelines, LoRA training images/s against a diffusers-example-style loop, CFLD pose-transfer seconds
per image against our plain path, evaluation pairs/s against CFLD's scikit-image loop; each with the peak memory of
both sides and the compute-bound estimate (counted FLOPs / matrix peak measured in the same run). Sizes: `tiny` (CPU,
the tiny model at 64x48) and `sd15` (SD 1.5's architecture with random weights at 512x512 on a CUDA GPU). Writes
bench/results/suite-<size>.json and .md (`--compile`: suite-<size>-compile.*; `--quick`: suite-<size>-quick.*, a
smoke run, not a measurement).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from bench._flops import matmul_peak
from bench._measure import backend_flags_restorer
from bench._report import LEGEND, Row, machine, save, table, versions, with_bound
from bench._sizes import SuiteSize, build_components, ours_speed, suite_size

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS = ("t2i", "translate", "train", "pose", "eval")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "sd15"], default="tiny",
                        help="tiny: CPU, tiny model at 64x48 (default); sd15: SD 1.5 architecture at 512 px, CUDA only")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these benchmarks ({', '.join(BENCHMARKS)}; default all)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 steps, batch 1, one repeat (not a measurement)")
    parser.add_argument("--device", help="run on this device instead (default: cpu for tiny, cuda for sd15)")
    parser.add_argument("--compile", action="store_true",
                        help="ours with torch.compile of the UNet (compile time shows in the one-time warm-up seconds)")
    parser.add_argument("--repeats", type=int, help="timed calls per side, interleaved, median kept (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for suite-<size>.json/.md (default bench/results)")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: expected at least 1 timed call per side")
    return args


def measure(size: SuiteSize, only: set[str], quick: bool) -> tuple[list[Row], dict]:
    """Run the selected benchmarks at `size`; return the rows (without bounds) and one-time costs in seconds."""
    from bench._sampling import fast_copy, sampling_rows
    from bench._tasks import evaluation_row, pose_row, training_row

    torch_defaults = backend_flags_restorer()  # before any apply_speed changes them for the process
    started = time.perf_counter()
    components = build_components(size)
    one_time = {"build_models_s": time.perf_counter() - started}
    rows: list[Row] = []
    if only & {"t2i", "translate"}:
        ours, one_time["apply_speed_s"] = fast_copy(components, ours_speed(size), size.device)
        rows += sampling_rows(size, components, ours, only, torch_defaults)
        del ours
    if "pose" in only:
        rows.append(pose_row(size, components))
    if "train" in only:
        rows.append(training_row(size, components))
    if "eval" in only:
        rows.append(evaluation_row(size, quick))
    return rows, one_time


def notes_for(size: SuiteSize, rows: list[Row], one_time: dict, peak: dict, quick: bool) -> list[str]:
    """The table's footnotes: settings, one-time costs, and what each reference is."""
    first = {name: sum(r.warmup_s.get(name, 0.0) for r in rows) for name in ("ours", "reference")}
    threads = f", torch threads {peak['threads']}" if peak["threads"] else ""
    notes = [f"size {size.name} on {size.device}: SD sampling at {size.image_hw[0]}x{size.image_hw[1]} (HxW) px, "
             f"DDIM, guidance {size.guidance_scale} (both branches in one batched UNet call), "
             f"translate strength {size.strength} (the UNet runs int(steps x {size.strength}) steps); median of "
             f"{size.repeats} interleaved timed calls per side, after one short warm-up call each",
             "ours: SpeedConfig() defaults (bf16 weights on CUDA, fp32 on CPU; SDPA; fused QKV; channels-last on CUDA; "
             "TF32 and cuDNN autotuning on CUDA; VAE slicing; text-embedding cache, though every timed call brings new "
             f"prompts, so only the empty negative prompt is reused; torch.compile {'on' if size.compile else 'off'})",
             "references: diffusers StableDiffusionPipeline / StableDiffusionImg2ImgPipeline on the plain components "
             "(ours run on a deep copy), default settings and torch's default backend flags; pose: our CFLD pipeline "
             "with SpeedConfig.plain() (diffusers has no CFLD pipeline); training: a loop written like diffusers' "
             "train_text_to_image_lora.py (rates: best of the alternating runs, peak memory CUDA only); evaluation: "
             "CFLD's per-image scikit-image SSIM/PSNR loop (CPU work, not matrix-bound: no bound)",
             f"one-time costs (not in the table): building the models {one_time['build_models_s']:.1f} s, deep copy + "
             f"apply_speed {one_time.get('apply_speed_s', 0.0):.2f} s; warm-up calls ours {first['ours']:.1f} s, "
             f"reference {first['reference']:.1f} s in all (per row in the JSON)",
             f"matrix peak measured in this run: {peak['flop_per_s'] / 1e12:.3g} TFLOP/s ({peak['dtype']} GEMM "
             f"{peak['size']}^2{threads}); the bound uses it for both sides, whatever precision each runs in"]
    if size.device.type == "cpu" and hasattr(os, "getloadavg"):
        notes.append(f"CPU load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
                     "both sides were measured interleaved, so ratios hold under load, absolute times do not")
    if quick:
        notes.insert(0, "QUICK smoke run (2 steps, batch 1, one repeat): exercises the code, measures nothing")
    return notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = suite_size(args.size, args.quick, args.device)
    size = replace(size, repeats=args.repeats or size.repeats, compile=args.compile)
    if size.device.type == "cuda" and not torch.cuda.is_available():
        print(f"--size {size.name}: needs a CUDA GPU and none is visible here; skipped. Run it on a GPU machine with "
              "`make bench SIZE=sd15` (or `python -m bench --size sd15`); `--size tiny` runs on any CPU.")
        return 0
    if size.name == "sd15" and size.device.type == "cpu":
        print("--size sd15 --device cpu: SD 1.5 at 512 px on a CPU takes minutes per call; the full suite, hours")
    os.environ.setdefault("ATELIER_NO_PROGRESS", "1")
    only = set(args.only or BENCHMARKS)
    peaks = [matmul_peak(size.device)]
    rows, one_time = measure(size, only, args.quick)
    peaks.append(matmul_peak(size.device))  # the better of before and after: load on a shared machine only lowers it
    peak = max(peaks, key=lambda p: p["flop_per_s"])
    rows = [with_bound(row, peak["flop_per_s"]) for row in rows]
    notes = notes_for(size, rows, one_time, peak, args.quick)
    print("\n" + table(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n" + LEGEND + "\n")
    record = {"machine": machine(size.device, peak), "versions": versions(), "one_time_s": one_time,
              "settings": {**asdict(size), "only": sorted(only), "quick": args.quick}}
    stem = f"suite-{size.name}" + ("-compile" if size.compile else "") + ("-quick" if args.quick else "")
    paths = save(args.out, stem, rows, record, notes)
    print("saved " + " and ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
