"""Write FashionSynth products in the retrieval layouts: product photos, FashionIQ, FashionGen and the ground truth.

    out/products/<asin>.png     every garment of every identity alone on white (products.py)
    out/fashioniq/              images/<asin>.png, image_splits/split.{dress,shirt,toptee}.{train,val,test}.json,
                                captions/cap.{cat}.{split}.json (triplets; test ones without "target"),
                                captions/cap.{cat}.{split}.caption.json (Fashion-IQ-Cap: {"image", "caption"} per
                                gallery image)
    out/fashiongen/             fashiongen_256_256_{train,validation}.h5 (the file names are fixed, whatever the size)
    out/retrieval.json          arguments, identity splits, attributes of every product, every triplet with its
                                target and changed attributes (test ones too), FashionGen row order

Splits follow identities: the identities `synthesize` holds out for test (same seed and fraction) are dealt in turn to
FashionIQ val and test, the rest are train; FashionGen train is FashionIQ train, FashionGen validation is val + test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from atelier import __version__
from atelier.data.synth.identity import sample_identity
from atelier.data.synth.products import Product, products_of, render_product
from atelier.data.synth.triplets import make_triplets
from atelier.data.synth.writer import clear_owned, default_workers, held_out_identities, ordered_map
from atelier.errors import UserError
from atelier.utils.io import atomic_path, prepare_out_dir, save_image, write_json

RETRIEVAL_VERSION = 1
OWNED = ("products", "fashioniq", "fashiongen", "retrieval.json")
SPLITS = ("train", "val", "test")
CATEGORIES = ("dress", "shirt", "toptee")
FASHIONGEN_SPLITS = {"train": ("train",), "validation": ("val", "test")}


@dataclass
class RetrievalSummary:
    """What write_retrieval wrote: folders and counts (identities, products, triplets per FashionIQ split)."""

    out: Path
    products: Path
    fashioniq: Path
    fashiongen: Path
    identities: dict[str, int]
    images: dict[str, int]
    triplets: dict[str, int]
    seconds: float


def retrieval_splits(identities: int, seed: int, test_fraction: float) -> dict[int, str]:
    """Identity number -> `train`, `val` or `test`; refuses counts that leave a split without identities."""
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"--test-fraction must be between 0 and 1 (exclusive), e.g. 0.2; got {test_fraction}")
    n_held = max(1, int(round(identities * test_fraction)))
    if identities < 3 or n_held < 2 or n_held >= identities:
        raise UserError(f"--retrieval needs train, val and test identities: {identities} identities with "
                        f"--test-fraction {test_fraction} hold out {n_held}; use at least 2 held out and 1 for train "
                        "(e.g. --identities 10 --test-fraction 0.2)")
    held = held_out_identities(identities, seed, n_held)
    splits = {number: "train" for number in range(1, identities + 1)}
    splits.update({number: SPLITS[1 + i % 2] for i, number in enumerate(held)})
    return splits


def _text(values: list[str]) -> np.ndarray:
    """Strings as fixed-length UTF-8 bytes, shape (N, 1), as the real FashionGen files store them."""
    encoded = [value.encode("utf-8") for value in values]
    return np.array(encoded, dtype=f"S{max([1, *map(len, encoded)])}").reshape(-1, 1)


def _render_job(job: tuple[Product, tuple[int, int], int]) -> Image.Image:
    """One product's image, its noise seeded by (seed, identity, garment) alone, so workers give identical files."""
    product, size, seed = job
    garment = product.identity.garments.index(product.garment)
    noise = np.random.default_rng([seed, 2, product.identity.number, garment]).integers(2**31)
    return render_product(product, size, seed=int(noise))


def _write_products(out: Path, h5_path: Path, products: list[Product], size: tuple[int, int], seed: int) -> None:
    """Render `products`, write each as products/ (and FashionIQ images/) PNGs and as a row of one FashionGen HDF5 file
    (written to a temporary file and renamed): images (N, H, W, 3) uint8, texts (N, 1) bytes, index int64 (N, 1)."""
    import h5py

    attributes = [p.attributes() for p in products]
    width, height = size
    with atomic_path(h5_path) as tmp, h5py.File(tmp, "w") as h5:
        stack = h5.create_dataset("input_image", shape=(len(products), height, width, 3), dtype=np.uint8)
        for key, field in (("input_description", "description"), ("input_name", "name"),
                           ("input_category", "fashiongen_category"), ("input_subcategory", "fashiongen_subcategory")):
            h5.create_dataset(key, data=_text([a[field] for a in attributes]))
        h5.create_dataset("input_productID", data=_text([p.asin for p in products]))
        h5.create_dataset("index", data=np.arange(len(products), dtype=np.int64).reshape(-1, 1))
        jobs = [(product, size, seed) for product in products]
        renders = ordered_map(_render_job, jobs, default_workers(len(jobs)), f"FashionSynth products ({h5_path.stem})")
        for row, (product, image) in enumerate(zip(products, renders)):
            save_image(image, out / "products" / f"{product.asin}.png")
            if product.fashioniq_category is not None:
                save_image(image, out / "fashioniq" / "images" / f"{product.asin}.png")
            stack[row] = np.asarray(image)


def _write_fashioniq(root: Path, products: list[Product], seed: int) -> dict[str, dict[str, list[dict]]]:
    """The FashionIQ layout's split and caption files (images are written by the caller); returns every triplet."""
    triplets: dict[str, dict[str, list[dict]]] = {}
    for c, category in enumerate(CATEGORIES):
        triplets[category] = {}
        for s, split in enumerate(SPLITS):
            gallery = [p for p in products if p.fashioniq_category == category and p.split == split]
            write_json(root / "image_splits" / f"split.{category}.{split}.json", [p.asin for p in gallery])
            found = make_triplets(gallery, np.random.default_rng([seed, 1, c, s]))
            entries = [{k: t[k] for k in ("target", "candidate", "captions") if split != "test" or k != "target"} for t in found]
            write_json(root / "captions" / f"cap.{category}.{split}.json", entries)
            captions = [{"image": p.asin, "caption": p.caption()} for p in gallery]
            write_json(root / "captions" / f"cap.{category}.{split}.caption.json", captions)
            triplets[category][split] = found
    return triplets


def write_retrieval(
    out: Path,
    identities: int = 40,
    size: tuple[int, int] = (256, 256),
    seed: int = 0,
    test_fraction: float = 0.2,
    overwrite: bool = False,
) -> RetrievalSummary:
    """Render every garment of `identities` FashionSynth identities as a product photo of size (W, H) and write the
    retrieval layouts under `out` (see the module docstring). The same seed gives the same identities as
    `synthesize` and identical files. Refuses a size side below 32 px and a split without identities."""
    started = time.perf_counter()
    size = (int(size[0]), int(size[1]))
    if min(size) < 32:
        raise UserError(f"--retrieval-size must be WxH with both sides at least 32 pixels, e.g. 256x256; got {size}")
    splits = retrieval_splits(identities, seed, test_fraction)
    out = prepare_out_dir(out, overwrite, "--overwrite")
    clear_owned(out, OWNED)  # a rerun must not leave products of an earlier, larger run behind
    products = [
        product for number in range(1, identities + 1)
        for product in products_of(sample_identity(np.random.default_rng([seed, number]), number), splits[number])
    ]  # fmt: skip
    triplets = _write_fashioniq(out / "fashioniq", products, seed)
    for name, members in FASHIONGEN_SPLITS.items():
        chosen = [p for p in products if p.split in members]
        _write_products(out, out / "fashiongen" / f"fashiongen_256_256_{name}.h5", chosen, size, seed)
    counts = {
        "identities": {split: sum(1 for s in splits.values() if s == split) for split in SPLITS},
        "images": {split: sum(1 for p in products if p.split == split) for split in SPLITS},
        "triplets": {split: sum(len(triplets[c][split]) for c in CATEGORIES) for split in SPLITS},
    }
    write_json(out / "retrieval.json", {
        "generator": "atelier FashionSynth retrieval", "version": RETRIEVAL_VERSION, "atelier_version": __version__,
        "arguments": {"identities": identities, "size": list(size), "seed": seed, "test_fraction": test_fraction},
        "counts": counts,
        "splits": {split: [n for n, s in splits.items() if s == split] for split in SPLITS},
        "products": {p.asin: p.attributes() for p in products},
        "fashioniq": triplets,
        "fashiongen": {name: [p.asin for p in products if p.split in members] for name, members in FASHIONGEN_SPLITS.items()},
    })  # fmt: skip
    seconds = time.perf_counter() - started
    return RetrievalSummary(out, out / "products", out / "fashioniq", out / "fashiongen", seconds=seconds, **counts)
