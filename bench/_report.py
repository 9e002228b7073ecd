"""The suite's one table: rows, formatting (markdown, printed and saved), and the machine/versions record."""

from __future__ import annotations

import math
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import torch

Unit = Literal["s", "s/img", "img/s", "pairs/s"]
RATES = ("img/s", "pairs/s")  # higher is better; the others are times, lower is better

COLUMNS = ("benchmark", "ours", "reference", "speed-up", "peak mem ours / ref", "compute bound", "ours / bound")
LEGEND = """\
- ours, reference: median of the interleaved timed runs (latency of the whole batch in s, or a rate); both sides run in
  the same process on the same weights: the reference on the components as built, ours on a copy given SpeedConfig().
- speed-up: how many times faster ours is (reference time / ours time, or ours rate / reference rate); > 1 is faster.
- peak mem: weights of the modules the call runs + the peak memory growth during the call (CUDA: max_memory_allocated;
  CPU: peak resident set after resetting it via /proc/self/clear_refs); n/a where it cannot be measured honestly.
- compute bound: the time (or rate) the counted matrix FLOPs (UNet calls x guidance branches x batch, plus text encoder
  and VAE; training: UNet forward + backward) would take at the matrix peak measured in this run.
- ours / bound: ours time / bound time (rates: bound rate / ours rate): how many times slower than the limit we run."""


@dataclass
class Row:
    """One benchmark row: ours and the reference in the row's unit, peak memory, FLOPs and the compute bound."""

    name: str
    unit: Unit
    ours: float
    reference: float
    peak_ours_bytes: int | None = None
    peak_reference_bytes: int | None = None
    flops: int | None = None  # FLOPs of one timed call (rates: of one image or pair)
    bound: float | None = None  # in the row's unit
    warmup_s: dict[str, float] = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        return self.ours / self.reference if self.unit in RATES else self.reference / self.ours

    @property
    def over_bound(self) -> float | None:
        if self.bound is None:
            return None
        return self.bound / self.ours if self.unit in RATES else self.ours / self.bound

    def to_json(self) -> dict:
        return {**asdict(self), "speedup": self.speedup, "ours_over_bound": self.over_bound}


def with_bound(row: Row, peak_flop_per_s: float) -> Row:
    """Fill `row.bound` from its FLOPs and the measured matrix peak (time, or rate for rate rows)."""
    if row.flops:
        seconds = row.flops / peak_flop_per_s
        row.bound = 1.0 / seconds if row.unit in RATES else seconds
    return row


def _number(value: float | None, unit: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def _memory(bytes_: int | None) -> str:
    if bytes_ is None:
        return "n/a"
    return f"{bytes_ / 2**30:.2f} GiB" if bytes_ >= 2**30 else f"{bytes_ / 2**20:.0f} MiB"


def table(rows: list[Row]) -> str:
    """The markdown table of `rows` (one line per row, columns as COLUMNS)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        memory = f"{_memory(row.peak_ours_bytes)} / {_memory(row.peak_reference_bytes)}"
        over = _number(row.over_bound)
        cells = (row.name, _number(row.ours, row.unit), _number(row.reference, row.unit), f"{_number(row.speedup)}x",
                 memory, _number(row.bound, row.unit), over if over == "n/a" else f"{over}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine(device: torch.device, peak: dict) -> dict:
    """Where and with what the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    record = {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
              "torch_threads": torch.get_num_threads(),
              "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
              "device": str(device), "matmul_peak": peak}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
        record["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return record


def versions() -> dict:
    import diffusers
    import peft
    import transformers

    from atelier import __version__

    return {"python": sys.version.split()[0], "atelier": __version__, "torch": torch.__version__,
            "cuda": torch.version.cuda, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}


def save(folder: Path, stem: str, rows: list[Row], record: dict, notes: list[str]) -> tuple[Path, Path]:
    """Write <stem>.json and <stem>.md atomically; return both paths."""
    from atelier.utils.io import write_json, write_text

    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    size = record["settings"]["name"]
    write_json(json_path, {"benchmark": "suite", "size": size, "date": date, **record,
                           "rows": [row.to_json() for row in rows], "notes": notes})
    machine_ = record["machine"]
    where = machine_.get("gpu") or f"{machine_['cpu']} ({machine_['torch_threads']} torch threads)"
    header = [f"# atelier speed suite, size `{size}`", "",
              f"{date}; {where}; " + ", ".join(f"{k} {v}" for k, v in record["versions"].items() if v), ""]
    write_text(md_path, "\n".join(header + [table(rows), ""] + [f"- {n}" for n in notes] + ["", LEGEND, ""]))
    return json_path, md_path
