"""Write a FashionSynth dataset in the real layouts: DeepFashion/CFLD, captioned style folders, and label maps.

    out/deepfashion/   {train,test}_highres/*.jpg, {train,test}.lst, fasion-resize-{pairs,annotation}-{train,test}.csv
    out/style/         photo/ and illustration/ (same names, metadata.jsonl + .txt sidecars), train.lst, test.lst
    out/labels/        parse/<stem>.png (0 background, 1 hair, 2 face, 3 skin, 4 top, 5 bottom, 6 dress, 7 shoes),
                       garment_mask/<stem>.png (255 on every garment pixel: labels 4-6), attributes.jsonl
    with conditions (MCLD's, atelier.data.synth.conditions):
    out/deepfashion/   {train,test}_densepose/<stem>.png (the IUV truth), {train,test}_texture/<stem>.png (the
                       identity's true atlas as a 512x512 SMPL texture), {train,test}_face/<stem>.npy (the identity
                       embedding, 14 floats; zeros for a back view)
    out/labels/        texture_atlas/id_<8 digits>.png (the true 1200x800 atlas; alpha 255 on covered texels)
    out/fashionsynth.json

Every identity draws from its own generator seeded by (seed, identity number), so files do not depend on the order
identities are rendered in or on the number of worker processes.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from atelier import __version__
from atelier.data.formats.deepfashion import flatten_name
from atelier.data.synth.identity import VIEW_NUMBERS, caption, sample_identity
from atelier.data.synth.poses import sample_pose
from atelier.data.synth.render import render
from atelier.errors import UserError
from atelier.utils.io import prepare_out_dir, write_bytes, write_json, write_text
from atelier.utils.progress import progress

logger = logging.getLogger(__name__)

FASHIONSYNTH_VERSION = 1
OWNED = ("deepfashion", "style", "labels", "fashionsynth.json", "retrieval", "tryon")  # `atelier synth --retrieval/--tryon`
SPLITS = ("train", "test")


@dataclass
class SynthSummary:
    """What synthesize wrote: folders and counts per split."""

    out: Path
    deepfashion: Path
    style: Path
    labels: Path
    identities: dict[str, int]
    images: dict[str, int]
    pairs: dict[str, int]
    seconds: float


def _encode(image: Image.Image, fmt: str) -> bytes:
    """Encode a PIL image (JPEG quality 95, or PNG) to bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    """The .npy file of an array."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _identity_texture(identity, out_dir: Path) -> bytes:
    """Write the identity's true atlas (RGBA, alpha 255 on the texels the canonical renders cover) under
    labels/texture_atlas/ and return its SMPL texture (gaps filled from the nearest covered texel) as PNG bytes."""
    from atelier.data.synth.conditions import fill_nearest, identity_atlas
    from atelier.data.uv_texture import atlas_to_smpl

    atlas, known = identity_atlas(identity)
    rgba = np.dstack([atlas, known.astype(np.uint8) * 255])
    write_bytes(out_dir / "labels" / "texture_atlas" / f"id_{identity.number:08d}.png", _encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    return _encode(Image.fromarray(atlas_to_smpl(fill_nearest(atlas, known))), "PNG")


def _write_conditions(identity, keypoints: np.ndarray, view: str, size: tuple[int, int], texture: bytes, root: Path,
                      split: str, stem: str) -> None:
    """Write one photo's MCLD conditions in the DeepFashion folder `root`: its IUV truth, its identity's SMPL texture
    and its identity embedding (zeros for a back view, which shows no face)."""
    from atelier.data.densepose import iuv_array
    from atelier.data.synth.conditions import EMBEDDING_SIZE, identity_embedding, render_iuv

    iuv = iuv_array(*render_iuv(identity, keypoints, size))
    write_bytes(root / f"{split}_densepose" / f"{stem}.png", _encode(Image.fromarray(iuv, "RGB"), "PNG"))
    write_bytes(root / f"{split}_texture" / f"{stem}.png", texture)
    face = identity_embedding(identity) if view == "front" else np.zeros(EMBEDDING_SIZE, np.float32)
    write_bytes(root / f"{split}_face" / f"{stem}.npy", _npy(face))


def _render_identity(job: tuple[int, int, int, tuple[int, int], str, str, bool]) -> list[dict]:
    """Render and write every pose of one identity (and with `conditions`, MCLD's); one attribute record per image."""
    number, seed, poses, size, split, out, conditions = job
    out_dir = Path(out)
    rng = np.random.default_rng([seed, number])
    identity = sample_identity(rng, number)
    text = caption(identity)
    texture = _identity_texture(identity, out_dir) if conditions else b""
    records = []
    for index in range(1, poses + 1):
        pose = sample_pose(rng, identity)
        noise_seed = int(rng.integers(2**31))
        rel = f"fashion/{identity.gender}/{identity.category}/id_{number:08d}/{index:02d}_{VIEW_NUMBERS[pose.view]}_{pose.view}.jpg"
        name = flatten_name(rel)
        stem = Path(name).stem
        photo = render(identity, pose.keypoints, size, "photo", seed=noise_seed)
        drawing = render(identity, pose.keypoints, size, "illustration", seed=noise_seed)
        photo_bytes = _encode(photo.image, "JPEG")
        write_bytes(out_dir / "deepfashion" / f"{split}_highres" / name, photo_bytes)
        write_bytes(out_dir / "style" / "photo" / name, photo_bytes)
        write_bytes(out_dir / "style" / "illustration" / name, _encode(drawing.image, "JPEG"))
        for rendition in ("photo", "illustration"):
            write_text(out_dir / "style" / rendition / f"{stem}.txt", text + "\n")
        write_bytes(out_dir / "labels" / "parse" / f"{stem}.png", _encode(Image.fromarray(photo.parse), "PNG"))
        mask = Image.fromarray(photo.garment_mask.astype(np.uint8) * 255)
        write_bytes(out_dir / "labels" / "garment_mask" / f"{stem}.png", _encode(mask, "PNG"))
        if conditions:
            _write_conditions(identity, pose.keypoints, pose.view, size, texture, out_dir / "deepfashion", split, stem)
        records.append({
            "name": name, "identity": number, "split": split, "pose_index": index, "view": pose.view, "caption": text,
            "keypoints_y": pose.keypoints[:, 0].tolist(), "keypoints_x": pose.keypoints[:, 1].tolist(),
            **identity.attributes(),
        })  # fmt: skip
    return records


def _check_arguments(identities: int, poses_per_identity: int, size: tuple[int, int], test_fraction: float) -> int:
    """Validate the arguments (naming the CLI flag) and return the number of test identities."""
    if identities < 2:
        raise UserError(f"--identities must be at least 2 (one for train, one for test); got {identities}")
    if not 2 <= poses_per_identity <= 99:
        raise UserError(f"--poses-per-identity must be 2..99 (pairs join two poses; names hold 2 digits); got {poses_per_identity}")
    if len(size) != 2 or min(size) < 32:
        raise UserError(f"--size must be WxH with both sides at least 32 pixels, e.g. 176x256; got {size}")
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"--test-fraction must be between 0 and 1 (exclusive), e.g. 0.2; got {test_fraction}")
    n_test = max(1, int(round(identities * test_fraction)))
    if n_test >= identities:
        raise UserError(f"--test-fraction {test_fraction} leaves no train identity out of {identities}; lower it")
    return n_test


def held_out_identities(identities: int, seed: int, n_test: int) -> list[int]:
    """The numbers (1-based) of the `n_test` identities held out for test, in the seed's draw order."""
    return (np.random.default_rng([seed, 0]).permutation(identities)[:n_test] + 1).tolist()


def _write_split_files(out: Path, split: str, records: list[dict], poses: int) -> int:
    """Write the split's lists, pairs and keypoint CSVs; return the number of pairs."""
    names = [r["name"] for r in records]
    pair_lines = [
        f"{names[start + a]},{names[start + b]}"
        for start in range(0, len(names), poses) for a in range(poses) for b in range(poses) if a != b
    ]  # fmt: skip
    annotation_lines = [f"{r['name']}:{json.dumps(r['keypoints_y'])}:{json.dumps(r['keypoints_x'])}" for r in records]
    listing = "".join(f"{name}\n" for name in names)
    write_text(out / "deepfashion" / f"{split}.lst", listing)
    write_text(out / "style" / f"{split}.lst", listing)
    write_text(out / "deepfashion" / f"fasion-resize-pairs-{split}.csv", "\n".join(["from,to", *pair_lines]) + "\n")
    write_text(out / "deepfashion" / f"fasion-resize-annotation-{split}.csv", "\n".join(["name:keypoints_y:keypoints_x", *annotation_lines]) + "\n")
    return len(pair_lines)


def clear_owned(out: Path, owned: tuple[str, ...]) -> None:
    """Remove the files and folders named `owned` under `out`: what a writer owns there from an earlier run."""
    for name in owned:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def ordered_map(function, jobs: list, workers: int, desc: str):
    """`function` over `jobs`, inline or in a pool of forked workers, yielding the results in job order either way,
    under one progress bar (`function` must be a module-level function, its jobs and results picklable).

    Fork, not spawn: spawn re-runs the caller's main module in every worker, which hangs scripts without a
    `__main__` guard. Where fork does not exist (Windows) the jobs run inline.
    """
    if workers <= 1 or len(jobs) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield from progress(map(function, jobs), total=len(jobs), desc=desc)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from progress(pool.imap(function, jobs, chunksize=4), total=len(jobs), desc=desc)


def default_workers(jobs: int) -> int:
    """Rendering processes for `jobs` jobs: one per CPU core up to 2, and 1 for fewer than 4 jobs."""
    return min(2, os.cpu_count() or 1) if jobs >= 4 else 1


def _render_all(jobs: list[tuple], workers: int) -> list[dict]:
    """Render identities (see `ordered_map`), their records in job order."""
    return [record for batch in ordered_map(_render_identity, jobs, workers, "FashionSynth identities") for record in batch]


def synthesize(
    out: Path,
    identities: int = 40,
    poses_per_identity: int = 4,
    size: tuple[int, int] = (176, 256),
    seed: int = 0,
    test_fraction: float = 0.2,
    overwrite: bool = False,
    workers: int | None = None,
    conditions: bool = False,
) -> SynthSummary:
    """Write a FashionSynth dataset (DeepFashion layout, photo/illustration style folders, labels) under `out`; with
    `conditions`, also MCLD's conditions beside the DeepFashion images (see atelier.data.synth.conditions)."""
    started = time.perf_counter()
    size = (int(size[0]), int(size[1]))
    n_test = _check_arguments(identities, poses_per_identity, size, test_fraction)
    if conditions:  # the packages they need, before anything is written (and the SMPL table built once, before forking)
        from atelier.data.uv_texture import check_installed

        check_installed(opencv=False)
    out = prepare_out_dir(out, overwrite, "--overwrite")
    clear_owned(out, OWNED)  # a rerun must not leave images of an earlier, larger run behind
    test_ids = set(held_out_identities(identities, seed, n_test))
    splits = {number: "test" if number in test_ids else "train" for number in range(1, identities + 1)}
    workers = workers or default_workers(identities)
    jobs = [(number, seed, poses_per_identity, size, splits[number], str(out), conditions)
            for number in range(1, identities + 1)]
    records = _render_all(jobs, workers)
    by_split = {split: [r for r in records if r["split"] == split] for split in SPLITS}
    pairs = {split: _write_split_files(out, split, by_split[split], poses_per_identity) for split in SPLITS}
    metadata = "".join(json.dumps({"file_name": r["name"], "text": r["caption"]}) + "\n" for r in records)
    for rendition in ("photo", "illustration"):
        write_text(out / "style" / rendition / "metadata.jsonl", metadata)
    write_text(out / "labels" / "attributes.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    counts = {
        "identities": {split: sum(1 for s in splits.values() if s == split) for split in SPLITS},
        "images": {split: len(by_split[split]) for split in SPLITS},
        "pairs": pairs,
    }
    arguments = {"identities": identities, "poses_per_identity": poses_per_identity, "size": list(size), "seed": seed,
                 "test_fraction": test_fraction, **({"conditions": True} if conditions else {})}
    write_json(out / "fashionsynth.json", {
        "generator": "atelier FashionSynth", "version": FASHIONSYNTH_VERSION, "atelier_version": __version__,
        "arguments": arguments, "counts": counts,
    })  # fmt: skip
    seconds = time.perf_counter() - started
    logger.info("FashionSynth: %d images in %.1f s under %s", len(records), seconds, out)
    return SynthSummary(out, out / "deepfashion", out / "style", out / "labels", seconds=seconds, **counts)
