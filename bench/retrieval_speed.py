"""UniFashion catalogue speed: `atelier index` throughput (images/s, the tiny model on the CPU) and one text query's
latency against 10k and 1M gallery vectors (synthetic and clustered like a catalogue's, 256 wide as BLIP-2's, 32 per
item as its queries), FAISS (exact flat index; IVF too at 1M, at several nprobe) beside brute-force numpy (one matrix product, best query per item, top 10) in
the same run, with the top 10 of each compared to the exact answer.

    python bench/retrieval_speed.py [--images 512] [--repeats 20] [--sizes 10000 1000000]

Writes bench/results/retrieval_speed.json (machine, versions, date, numbers).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "retrieval_speed.json"
WIDTH, QUERIES, TOP = 256, 32, 10
CLUSTERS = 1000  # product kinds in the synthetic catalogue
NPROBES = (32, 128, 512)  # IVF lists visited: atelier's default, then more


def indexing_rate(images: int) -> dict:
    """Images per second of build_index with the tiny model on `images` random 64x64 PNGs (decode included)."""
    import torch
    from PIL import Image

    from atelier.methods.unifashion.index import build_index
    from atelier.methods.unifashion.model import RetrievalModel, RetrievalModelConfig

    torch.manual_seed(0)
    model = RetrievalModel(RetrievalModelConfig.tiny()).eval()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as folder:
        paths = []
        for number in range(images):
            paths.append(Path(folder) / "images" / f"{number:05d}.png")
            paths[-1].parent.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(paths[-1])
        started = time.perf_counter()
        build_index(model, paths, 32, Path(folder) / "index", resume=False)
        seconds = time.perf_counter() - started
    return {"images": images, "seconds": round(seconds, 3), "images_per_second": round(images / seconds, 1)}


def brute_force(vectors: np.ndarray, query: np.ndarray) -> tuple[list[int], list[float]]:
    """The reference: every vector scored, an item's best query kept, the top 10 items sorted."""
    best = (vectors @ query).reshape(-1, QUERIES).max(axis=1)
    top = np.argpartition(-best, TOP)[:TOP]
    top = top[np.argsort(-best[top], kind="stable")]
    return top.tolist(), best[top].tolist()


def timed(work, repeats: int) -> float:
    """Median milliseconds of `work()` over `repeats` runs, after one warm-up."""
    work()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def catalogue_vectors(total: int, rng: np.random.Generator) -> np.ndarray:
    """(total, WIDTH) unit vectors shaped like a catalogue's: items of QUERIES vectors, each item near one of
    CLUSTERS product kinds (cosine about 0.8 to its kind's centre), its vectors near the item (about 0.9). Uniform
    random vectors would have no neighbourhoods, the case where no approximate index can work."""
    items = total // QUERIES
    centres = rng.standard_normal((CLUSTERS, WIDTH), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    item_vectors = centres[rng.integers(0, CLUSTERS, items)] + 0.047 * rng.standard_normal((items, WIDTH), dtype=np.float32)
    item_vectors /= np.linalg.norm(item_vectors, axis=1, keepdims=True)
    vectors = np.repeat(item_vectors, QUERIES, axis=0)
    vectors += 0.03 * rng.standard_normal(vectors.shape, dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def query_latency(total: int, repeats: int) -> dict:
    """Median latency of one text query over `total` vectors: numpy, FAISS flat, and (from 1M vectors) FAISS IVF at
    several nprobe, each with its top-10 overlap with the exact answer."""
    from atelier.methods.unifashion.index import CatalogueIndex, faiss_index, search

    total -= total % QUERIES  # whole items of QUERIES vectors each
    rng = np.random.default_rng(1)
    vectors = catalogue_vectors(total, rng)
    query = vectors[(12345 % (total // QUERIES)) * QUERIES] + 0.05 * rng.standard_normal(WIDTH, dtype=np.float32)
    query /= np.linalg.norm(query)
    paths = [Path(f"{item}") for item in range(total // QUERIES)]
    exact, _ = brute_force(vectors, query)
    row = {"vectors": total, "items": total // QUERIES, "numpy_ms": round(timed(lambda: brute_force(vectors, query), repeats), 3)}
    kinds = [False] + ([True] if total >= 1_000_000 else [])
    for ivf in kinds:
        started = time.perf_counter()
        index, record = faiss_index(vectors, ivf, None)
        built = time.perf_counter() - started
        catalogue = CatalogueIndex(index, paths, QUERIES, record)
        for nprobe in NPROBES if ivf else (None,):
            found = [int(str(path)) for path, _ in search(catalogue, query[None], TOP, nprobe)]
            name = f"faiss_ivf_nprobe{nprobe}" if ivf else "faiss_flat"
            row[f"{name}_ms"] = round(timed(lambda c=catalogue, n=nprobe: search(c, query[None], TOP, n), repeats), 3)
            row[f"{name}_recall_at_10_vs_exact"] = len(set(found) & set(exact)) / TOP
            row[f"{name}_speedup_vs_numpy"] = round(row["numpy_ms"] / row[f"{name}_ms"], 2)
        row[f"faiss_{'ivf' if ivf else 'flat'}_build_s"] = round(built, 2)
        if ivf:
            row["faiss_ivf_lists"], row["faiss_ivf_default_nprobe"] = record["nlist"], record["nprobe"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="images to index (default 512)")
    parser.add_argument("--repeats", type=int, default=20, help="timed queries per setting (default 20)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000], help="gallery vectors")
    args = parser.parse_args(argv)

    import faiss
    import torch

    from atelier import __version__
    from atelier.utils.io import write_json

    indexing = indexing_rate(args.images)
    print(f"index: {indexing['images']} images in {indexing['seconds']} s = {indexing['images_per_second']} images/s "
          "(tiny model, 64x64, CPU)")
    latency = []
    for total in args.sizes:
        row = query_latency(total, args.repeats)
        latency.append(row)
        names = [key[: -len("_ms")] for key in row if key.endswith("_ms") and key != "numpy_ms"]
        parts = [f"numpy {row['numpy_ms']} ms"] + [
            f"{name} {row[f'{name}_ms']} ms (x{row[f'{name}_speedup_vs_numpy']} vs numpy, top-10 overlap with exact "
            f"{row[f'{name}_recall_at_10_vs_exact']:.0%})" for name in names]
        print(f"query over {row['vectors']:,} vectors ({row['items']:,} items): " + "; ".join(parts))
    write_json(RESULTS, {
        "benchmark": "retrieval_speed",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": {"python": sys.version.split()[0], "atelier": __version__, "numpy": np.__version__,
                     "faiss": faiss.__version__, "torch": torch.__version__},
        "settings": {"width": WIDTH, "queries_per_item": QUERIES, "clusters": CLUSTERS, "top": TOP, "repeats": args.repeats},
        "results": {"indexing": indexing, "query_latency": latency},
    })  # fmt: skip
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
