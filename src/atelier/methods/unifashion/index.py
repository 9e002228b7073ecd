"""A catalogue index for UniFashion retrieval: every image's query features in a FAISS index, searched by text, image
or image + modification text.

Scores are BLIP-2's ITC: an item's score is the best cosine between the query's vectors and the item's Q query
features. So all N x Q image vectors are indexed (inner product on L2-normalised vectors), vector v belongs to item
v // Q, and a search asks FAISS for the k x Q nearest vectors of each query vector and keeps each item's best: with
the exact index (`IndexFlatIP`) this is exactly the top k items, since at most Q (k - 1) vectors of better items can
precede a top-k item's best vector. Query vectors: a text is its text feature (1 x D); a reference image with a
modification text is the composed feature (1 x D); an image alone is all its Q query features (Q x D, max-sim), so an
image of the catalogue finds itself first, at score 1.

OUT/ holds `vectors.npy` (N x Q x D float32), `index.faiss` and `items.json` (written last: the index is complete
when it exists): the image paths in order, the checkpoint, the model's fingerprint and the index settings. Past
`IVF_MIN_VECTORS` vectors (or when asked) the index is an `IndexIVFFlat` trained on a seeded sample, searched with
`nprobe` lists. While embedding, each finished batch is written atomically to OUT/parts/, so a killed run, started
again, keeps the leading batches whose images and model are unchanged; parts/ is removed once the index is complete.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from atelier.errors import UserError

logger = logging.getLogger(__name__)

INDEX_FORMAT = "atelier-retrieval-index"
INDEX_VERSION = 1
ITEMS = "items.json"
VECTORS = "vectors.npy"
FAISS_FILE = "index.faiss"
PARTS = "parts"
IVF_MIN_VECTORS = 1_000_000  # above this many vectors an exact search gets slow: IVF by default
IVF_TRAIN_PER_LIST = 256  # training vectors sampled per inverted list (FAISS wants 39 to 256)
DEFAULT_NPROBE = 32


@dataclass
class CatalogueIndex:
    """A loaded index: the FAISS index of every item's Q vectors, the item paths in order and items.json's record."""

    index: Any  # faiss.Index
    paths: list[Path]
    queries: int  # Q: vectors per item
    record: dict[str, Any]

    @property
    def nprobe(self) -> int | None:
        """Inverted lists an IVF search visits (None for the exact index)."""
        return self.record.get("nprobe")


def _faiss():
    """The faiss module, its loader's messages about CPU instruction sets kept out of the command's output."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of every tensor of the model's state dict (names, shapes, dtypes and bytes): two runs embed alike only
    when it is equal."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


@torch.no_grad()
def embed_images(model, images: list) -> np.ndarray:
    """(B, Q, D) float32 normalised query features of PIL images (the model's preprocessing, its device)."""
    from atelier.methods.unifashion.model import preprocess

    device = next(model.parameters()).device
    pixels = preprocess(images, model.config.image_size).to(device)
    return model.image_features(pixels).float().cpu().numpy()


def build_index(model, image_paths: Sequence[str | Path], batch_size: int, out: str | Path, resume: bool = True, *,
                checkpoint: str = "", ivf: bool | None = None, nprobe: int | None = None) -> CatalogueIndex:
    """Embed `image_paths` in batches of `batch_size` with one progress bar and write the index into `out` (see the
    module docstring); return it loaded. `resume` keeps the finished batches of an earlier, interrupted run with the
    same model, batch size and leading images (False starts over). `ivf`: True for IndexIVFFlat, False for the exact
    index, None to choose by size; `nprobe`: lists an IVF search visits (default min(lists, 32)). `checkpoint` is
    recorded in items.json for `atelier search`. Refuses no images and batch_size < 1; an image that cannot be
    decoded stops the run (UserError naming it) with the finished batches kept."""
    from atelier.data.transforms import open_rgb
    from atelier.utils.io import write_json
    from atelier.utils.progress import progress

    paths = [Path(path) for path in image_paths]
    if not paths or batch_size < 1:
        raise UserError(f"index of {len(paths)} images in batches of {batch_size}: expected at least one image and a "
                        "batch size >= 1")
    out = Path(out)
    fingerprint = model_fingerprint(model)
    plan = {"paths": [str(path) for path in paths], "batch_size": batch_size, "model": fingerprint}
    starts = list(range(0, len(paths), batch_size))
    if resume and _same_embedding(out, plan):
        vectors = np.load(out / VECTORS, mmap_mode="r")
        logger.info("index: %s already holds these images' vectors from this model; rebuilding the index only", out)
    else:
        (out / ITEMS).unlink(missing_ok=True)  # from here until the new one is written, OUT is no complete index
        done = _start_parts(out / PARTS, plan, len(starts), resume)
        for number in progress(range(done, len(starts)), desc="index", total=len(starts), initial=done):
            batch = paths[starts[number] : starts[number] + batch_size]
            _save_array(out / PARTS / f"batch-{number:06d}.npy", embed_images(model, [open_rgb(p) for p in batch]))
        vectors = _join_parts(out, len(starts))
    flat_or_ivf, settings = faiss_index(vectors.reshape(-1, vectors.shape[-1]), ivf, nprobe)
    _write_faiss(flat_or_ivf, out / FAISS_FILE)
    write_json(out / ITEMS, {"format": INDEX_FORMAT, "version": INDEX_VERSION, "checkpoint": checkpoint,
                             "model": fingerprint, "items": len(paths), "queries": int(vectors.shape[1]),
                             "dim": int(vectors.shape[2]), "batch_size": batch_size, **settings,
                             "paths": plan["paths"]})
    if (out / PARTS).exists():
        shutil.rmtree(out / PARTS)
    return load_index(out)


def _same_embedding(out: Path, plan: dict[str, Any]) -> bool:
    """Whether OUT holds a complete index of the same images, model and batch size (its vectors can be reused)."""
    import json

    try:
        record = json.loads((out / ITEMS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and all(record.get(key) == value for key, value in plan.items()) and \
        (out / VECTORS).is_file()


def _start_parts(parts: Path, plan: dict[str, Any], batches: int, resume: bool) -> int:
    """Ready parts/ for `plan` and return how many batches are done: with `resume`, the leading part files of an
    earlier run that fit it (same model and batch size, the same images batch for batch), else none. Every other
    file there (later batches, the old plan, temp files a killed write left) is deleted, then the plan written."""
    import json

    from atelier.utils.io import write_json

    try:
        old = json.loads((parts / "plan.json").read_text(encoding="utf-8")) if resume else None
    except (OSError, ValueError):
        old = None
    kept = 0
    if isinstance(old, dict) and old.get("model") == plan["model"] and old.get("batch_size") == plan["batch_size"]:
        size, old_paths = plan["batch_size"], old.get("paths", [])
        while (kept < batches and (parts / f"batch-{kept:06d}.npy").is_file()
               and old_paths[kept * size : (kept + 1) * size] == plan["paths"][kept * size : (kept + 1) * size]):
            kept += 1
    if kept:
        logger.info("index: keeping %d finished batches of an earlier run", kept)
    keep = {f"batch-{number:06d}.npy" for number in range(kept)}
    for file in parts.iterdir() if parts.is_dir() else ():
        if file.name not in keep:
            shutil.rmtree(file) if file.is_dir() else file.unlink()
    write_json(parts / "plan.json", plan)
    return kept


def _save_array(path: Path, array: np.ndarray) -> None:
    from atelier.utils.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def _join_parts(out: Path, batches: int) -> np.ndarray:
    """OUT/vectors.npy from the part files, written into place (memory-mapped, then renamed); returned mapped."""
    from atelier.utils.io import atomic_path

    parts = [np.load(out / PARTS / f"batch-{number:06d}.npy", mmap_mode="r") for number in range(batches)]
    shape = (sum(part.shape[0] for part in parts), *parts[0].shape[1:])
    with atomic_path(out / VECTORS) as tmp:
        joined = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        start = 0
        for part in parts:
            joined[start : start + part.shape[0]] = part
            start += part.shape[0]
        joined.flush()
        del joined
    return np.load(out / VECTORS, mmap_mode="r")


def faiss_index(vectors: np.ndarray, ivf: bool | None, nprobe: int | None) -> tuple[Any, dict[str, Any]]:
    """The inner-product FAISS index of (V, D) float32 vectors and its settings for items.json: exact (IndexFlatIP),
    or with `ivf` (None: past IVF_MIN_VECTORS) an IndexIVFFlat of about 4 sqrt(V) lists (at most V / 39), trained on
    a seeded sample of up to 256 vectors per list, searched with `nprobe` lists (default min(lists, 32))."""
    faiss = _faiss()

    total, dim = vectors.shape
    if ivf is None:
        ivf = total > IVF_MIN_VECTORS
    if not ivf:
        index = faiss.IndexFlatIP(dim)
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return index, {"index": "flat", "nlist": None, "nprobe": None}
    nlist = max(1, min(round(4 * math.sqrt(total)), total // 39))
    if nprobe is not None and nprobe < 1:
        raise UserError(f"nprobe {nprobe}: expected a whole number >= 1")
    sample = np.sort(np.random.default_rng(0).choice(total, min(total, IVF_TRAIN_PER_LIST * nlist), replace=False))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    for start in range(0, total, 65536):
        index.add(np.ascontiguousarray(vectors[start : start + 65536], dtype=np.float32))
    return index, {"index": "ivf", "nlist": nlist, "nprobe": min(nlist, nprobe or DEFAULT_NPROBE)}


def _write_faiss(index, path: Path) -> None:
    from atelier.utils.io import atomic_path

    faiss = _faiss()
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def load_index(folder: str | Path) -> CatalogueIndex:
    """The index `build_index` wrote in `folder`. Refuses a folder without a complete index (items.json of this
    format, index.faiss holding items x queries vectors)."""
    from atelier.data.formats.text import parse_json, read_text

    faiss = _faiss()
    folder = Path(folder)
    items = folder / ITEMS
    if not folder.is_dir() or not items.is_file():
        state = "an unfinished index (run atelier index again to finish it)" if (folder / PARTS).is_dir() else \
            "not an index"
        raise UserError(f"--index {folder} is {state}: expected a folder written by `atelier index` ({ITEMS}, "
                        f"{FAISS_FILE}, {VECTORS})")
    record = parse_json(read_text(items, "index record"), f"{items}: not valid JSON; expected the record "
                                                          "`atelier index` writes")
    if not isinstance(record, dict) or record.get("format") != INDEX_FORMAT or \
            not all(isinstance(record.get(key), int) and record[key] > 0 for key in ("items", "queries", "dim")) or \
            not isinstance(record.get("paths"), list) or len(record["paths"]) != record["items"]:
        raise UserError(f"{items}: not an `atelier index` record (format {INDEX_FORMAT!r}: items, queries and dim "
                        "counts and one path per item); build the index again with atelier index")
    try:
        index = faiss.read_index(str(folder / FAISS_FILE))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
        raise UserError(f"{folder / FAISS_FILE} cannot be read as a FAISS index ({first[:160]}); build the index "
                        "again with atelier index") from None
    if index.ntotal != record["items"] * record["queries"] or index.d != record["dim"]:
        raise UserError(f"{folder / FAISS_FILE} holds {index.ntotal} vectors of {index.d} but {items} says "
                        f"{record['items']} items x {record['queries']} of {record['dim']}; build the index again")
    return CatalogueIndex(index, [Path(path) for path in record["paths"]], record["queries"], record)


def search(index: CatalogueIndex, query_vectors: np.ndarray, k: int, nprobe: int | None = None) -> list[tuple[Path, float]]:
    """The top `k` items for one query of M vectors (M x D, normalised), best first, as (path, score): an item's
    score is the best inner product between any query vector and any of its Q vectors (exact with the flat index).
    `nprobe` overrides the IVF index's. Fewer than k when the catalogue is smaller. Refuses k < 1 and vectors of
    another width."""
    if k < 1:
        raise UserError(f"-k {k}: expected a whole number >= 1")
    queries = np.ascontiguousarray(np.asarray(query_vectors, dtype=np.float32).reshape(-1, query_vectors.shape[-1]))
    if queries.shape[1] != index.index.d:
        raise UserError(f"query vectors of width {queries.shape[1]}, but the index holds vectors of {index.index.d}: "
                        "search with the model the index was built with")
    if nprobe is not None and nprobe < 1:
        raise UserError(f"--nprobe {nprobe}: expected a whole number >= 1")
    if index.record.get("index") == "ivf":
        faiss = _faiss()

        faiss.extract_index_ivf(index.index).nprobe = nprobe or index.nprobe
    scores, ids = index.index.search(queries, min(k * index.queries, index.index.ntotal))
    best: dict[int, float] = {}
    for score, vector in zip(scores.ravel().tolist(), ids.ravel().tolist()):
        if vector >= 0 and score > best.get(vector // index.queries, -math.inf):
            best[vector // index.queries] = score
    ranked = sorted(best.items(), key=lambda pair: (-pair[1], pair[0]))[:k]
    return [(index.paths[item], score) for item, score in ranked]


@torch.no_grad()
def query_features(model, text: str | None = None, image=None) -> np.ndarray:
    """(M, D) float32 vectors of a query: a text's text feature (1 x D), an image's Q query features (Q x D), or for
    both the composed feature of the image modified by the text (1 x D). Refuses neither, and text on a model
    without a tokenizer."""
    from atelier.methods.unifashion.model import preprocess
    from atelier.methods.unifashion.tokenizer import encode

    if text is None and image is None:
        raise UserError("a query needs a text, an image, or both (an image and its modification text)")
    if image is not None and text is None:
        return embed_images(model, [image])[0]
    if model.tokenizer is None:
        raise UserError("the retrieval model has no tokenizer, so it cannot read a text query; use a checkpoint that "
                        "ships one (an atelier retrieval run, or a BLIP-2 folder with tokenizer files)")
    device = next(model.parameters()).device
    ids, mask = encode(model.tokenizer, [text], model.config.max_text_length)
    ids, mask = ids.to(device), mask.to(device)
    if image is None:
        features = model.text_features(ids, mask)
    else:
        features = model.composed_features(preprocess([image], model.config.image_size).to(device), ids, mask)
    return features.float().cpu().numpy()
