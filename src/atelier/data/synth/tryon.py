"""Write FashionSynth people in the VITON-HD try-on layout (with MGD's captions and sketches), so try-on has ground
truth in the paired setting: the person image itself is the paired target.

    out/train_pairs.txt, out/test_pairs.txt   train: each person with their own top; test: each test person with
                                              another test person's top (deterministic by seed)
    out/{train,test}/image/<id>_00.jpg              the person, one frontal photo per identity
                     cloth/<id>_00.jpg              their top alone on white (the person's image size)
                     cloth-mask/<id>_00.jpg         the top's mask
                     image-parse-v3/<id>_00.png     FashionSynth's parse labels 0-7 as a palette PNG
                     agnostic-v3.2/<id>_00.jpg      the person, grey 128 where agnostic-mask is set
                     agnostic-mask/<id>_00_mask.png the VITON-HD rule (atelier.data.agnostic): top and arms from the
                                                    parse map, dilated a few px, plus the torso polygon between
                                                    shoulders and hips; head, lower-body garments, legs and shoes kept
                     image-densepose/<id>_00.jpg    a DensePose-STYLE image, NOT DensePose: channel 0 = body part
                                                    index x 16 (0 background), channel 1 = position along the part's
                                                    bone, channel 2 = position across it (both 0-255)
                     openpose_json/<id>_00_keypoints.json   BODY_25 converted from the 18 COCO-order joints, in the
                                                    written image's pixels (mid-hip = mean of both hips; feet and
                                                    missing joints 0, 0, 0)
                     im_sketch/<id>_00.png          XDoG sketch (black lines on white) of the person photo cut to
                                                    the top's parse region dilated 2 px, white elsewhere: the top's
                                                    lines where it is worn, aligned with the person as MGD's are
      test only:     im_sketch_unpaired/<id>_00_<other>_00.png   the same sketch of the person re-rendered (same pose
                                                    and render seed) wearing <other>'s top in place of their own: the
                                                    partner's top as it would sit on this person
    out/captions.json                         {"<id>": [noun phrases]} from each top's colour, pattern and sleeves
    out/tryon.json                            arguments, counts, identity splits

Identities are the ones `synthesize` draws for the same seed, split by the same `held_out_identities`; dress wearers
are skipped (VITON-HD is upper-body try-on). Every file is written atomically and reruns are byte-identical.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from atelier import __version__
from atelier.data import agnostic
from atelier.data.agnostic import FASHIONSYNTH, agnostic_image, body25, densepose_style, garment_sketch
from atelier.data.synth.body import TOP, complete_skeleton
from atelier.data.synth.identity import Garment, Identity, sample_identity
from atelier.data.synth.poses import sample_pose
from atelier.data.synth.products import Product, render_product
from atelier.data.synth.render import RenderResult, render
from atelier.data.synth.writer import clear_owned, default_workers, held_out_identities, ordered_map
from atelier.errors import UserError
from atelier.utils.io import prepare_out_dir, write_bytes, write_json, write_text

TRYON_VERSION = 2  # 2: sketches drawn on the person (the top where it is worn), not on the product photo
OWNED = ("train", "test", "train_pairs.txt", "test_pairs.txt", "captions.json", "tryon.json")
SPLITS = ("train", "test")
PARSE_PALETTE = FASHIONSYNTH.palette  # parse label colours of the palette PNG (0 background ... 7 shoes)
# XDoG inks an edge on its darker side, 1-2 px wide whatever the image size (its Gaussians are in pixels), so the
# top's outline against lighter skin or background lies up to 2 px outside the top's parse region
SKETCH_MARGIN = 2


@dataclass
class TryOnSummary:
    """What write_tryon wrote: the root, people per split, dress wearers skipped, pairs per split, seconds."""

    out: Path
    identities: dict[str, int]
    skipped: int
    pairs: dict[str, int]
    seconds: float


def agnostic_mask(parse: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The VITON-HD agnostic region of a FashionSynth parse map (atelier.data.agnostic.agnostic_mask with the
    fashionsynth label set), bool (H, W); `points` are the 18 joints as (y, x) image pixels."""
    return agnostic.agnostic_mask(parse, points, FASHIONSYNTH)


def _encode(array: np.ndarray, fmt: str, palette: bool = False) -> bytes:
    image = Image.fromarray(array, "P" if palette else None)
    if palette:
        image.putpalette([value for rgb in PARSE_PALETTE for value in rgb])
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _identity(seed: int, number: int) -> Identity:
    """The identity `synthesize` draws for this seed and number."""
    return sample_identity(np.random.default_rng([seed, number]), number)


def with_top(identity: Identity, top: Garment) -> Identity:
    """`identity` with `top` in place of their own top (the bottom, body, hair and background kept)."""
    return replace(identity, garments=tuple(top if garment.kind == "top" else garment for garment in identity.garments))


def person_render(
    seed: int, number: int, size: tuple[int, int], top: Garment | None = None
) -> tuple[RenderResult, np.ndarray, int]:
    """The try-on photo of identity `number` at size (W, H), wearing `top` in place of their own when given:
    (the render, the pose's 18 frame keypoints, the render seed). The pose and render seed come from
    (seed, 3, number) alone, so the person stands the same way whichever top they wear."""
    identity = _identity(seed, number)
    rng = np.random.default_rng([seed, 3, number])
    pose = sample_pose(rng, identity, view="front")
    noise = int(rng.integers(2**31))
    dressed = identity if top is None else with_top(identity, top)
    return render(dressed, pose.keypoints, size, "photo", seed=noise), pose.keypoints, noise


def top_region(parse: np.ndarray) -> np.ndarray:
    """Bool (H, W): a parse map's top (label TOP) dilated SKETCH_MARGIN px, the region a try-on sketch is drawn in."""
    return ndimage.binary_dilation(parse == TOP, iterations=SKETCH_MARGIN)


def top_sketch(photo: np.ndarray, parse: np.ndarray) -> np.ndarray:
    """The XDoG sketch (black lines on white, uint8 (H, W)) of a person photo, white outside `top_region(parse)`: the
    top's lines where it is worn. The whole photo is sketched before the cut, so the outline is the edge between the
    top and what surrounds it, not an edge the cut would make."""
    sketch = garment_sketch(photo)
    sketch[~top_region(parse)] = 255
    return sketch


def _render_job(job: tuple[int, int, tuple[int, int], str, int | None]) -> dict:
    """One person's arrays: photo, parse, agnostic mask and image, DensePose-style image, cloth and its mask, the
    BODY_25 keypoints, and for a test person with a partner the photo and parse of the same render wearing the
    partner's top ("worn_image", "worn_parse"; None otherwise). Seeded by (seed, 3, identity) alone, so workers give
    identical files. No sketch here: XDoG runs torch, kept out of the forked workers, in write_tryon."""
    number, seed, size, split, partner = job
    width, height = size
    identity = _identity(seed, number)
    result, keypoints, noise = person_render(seed, number, size)
    points = complete_skeleton(keypoints, (height, width)).points
    photo = np.asarray(result.image)
    mask = agnostic_mask(result.parse, points)
    top = identity.garment("top")
    product = Product(f"FS{number:06d}T", identity, top, split)
    cloth = render_product(product, size, seed=noise)
    cloth_mask = _product_mask(product, size)
    return {
        "image": photo, "parse": result.parse, "mask": mask, "agnostic": agnostic_image(photo, mask),
        "densepose": densepose_style(result.parse, points), "cloth": np.asarray(cloth), "cloth_mask": cloth_mask,
        "keypoints": body25(keypoints, size), "worn_image": None, "worn_parse": None,
    } | _worn(seed, number, size, partner)  # fmt: skip


def _worn(seed: int, number: int, size: tuple[int, int], partner: int | None) -> dict:
    """The person re-rendered wearing the partner's top, for the unpaired sketch; {} without a partner."""
    if partner is None:
        return {}
    worn = person_render(seed, number, size, top=_identity(seed, partner).garment("top"))[0]
    return {"worn_image": np.asarray(worn.image), "worn_parse": worn.parse}


def _product_mask(product: Product, size: tuple[int, int]) -> np.ndarray:
    """The garment's mask on the product photo of `render_product` (same crop, fit and placement), uint8 0/255."""
    from atelier.data.synth.body import GARMENT_LABELS
    from atelier.data.synth.products import FILL, product_keypoints

    width, height = size
    scale = max(1, int(np.ceil(2 * max(width, height) / 256)))
    alone = replace(product.identity, garments=(product.garment,))
    parse = render(alone, product_keypoints(alone), (176 * scale, 256 * scale), "photo", seed=0).parse
    mask = parse == GARMENT_LABELS[product.garment.kind]
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    fit = FILL * min(width / (box[2] - box[0]), height / (box[3] - box[1]))
    fitted = (max(1, round((box[2] - box[0]) * fit)), max(1, round((box[3] - box[1]) * fit)))
    alpha = Image.fromarray(mask.astype(np.uint8) * 255).crop(box).resize(fitted, Image.Resampling.LANCZOS)
    out = np.zeros((height, width), dtype=np.uint8)
    left, top = (width - fitted[0]) // 2, (height - fitted[1]) // 2
    out[top : top + fitted[1], left : left + fitted[0]] = np.where(np.asarray(alpha) >= 128, 255, 0)
    return out


def tryon_splits(identities: int, seed: int, test_fraction: float) -> dict[int, str]:
    """Identity number -> `train` or `test` for the identities wearing a top (the held-out ones of `synthesize` are
    test); UserError when no train person or fewer than 2 test people wear a top (the unpaired test pairs need
    another person's top)."""
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"--test-fraction must be between 0 and 1 (exclusive), e.g. 0.2; got {test_fraction}")
    if identities < 1:
        raise UserError(f"--identities must be at least 1; got {identities}")
    held = set(held_out_identities(identities, seed, max(1, int(round(identities * test_fraction)))))
    wearing = [n for n in range(1, identities + 1) if _identity(seed, n).garment("top") is not None]
    splits = {n: "test" if n in held else "train" for n in wearing}
    people = {split: [n for n in wearing if splits[n] == split] for split in SPLITS}
    if not people["train"] or len(people["test"]) < 2:
        raise UserError(f"--tryon: {identities} identities with --test-fraction {test_fraction} give "
                        f"{len(people['train'])} train and {len(people['test'])} test people wearing a top; it needs "
                        "at least 1 and 2 (dress wearers are skipped): use more identities or a larger --test-fraction")
    return splits


def write_tryon(
    out: Path,
    identities: int = 40,
    size: tuple[int, int] = (192, 256),
    seed: int = 0,
    test_fraction: float = 0.2,
    overwrite: bool = False,
) -> TryOnSummary:
    """Write the top wearers among `identities` FashionSynth identities in the VITON-HD layout under `out` (see the
    module docstring) at size (W, H). Refuses a side below 32 px, and a draw with no train person or fewer than 2
    test people wearing a top (the unpaired test pairs need another person's top)."""
    started = time.perf_counter()
    size = (int(size[0]), int(size[1]))
    if min(size) < 32:
        raise UserError(f"--tryon-size must be WxH with both sides at least 32 pixels, e.g. 192x256; got {size}")
    splits = tryon_splits(identities, seed, test_fraction)
    wearing = sorted(splits)
    people = {split: [n for n in wearing if splits[n] == split] for split in SPLITS}
    out = prepare_out_dir(out, overwrite, "--overwrite")
    clear_owned(out, OWNED)  # a rerun must not leave people of an earlier, larger run behind
    order = np.random.default_rng([seed, 4]).permutation(len(people["test"]))
    test_people = [people["test"][i] for i in order]
    partner = {n: test_people[(i + 1) % len(test_people)] for i, n in enumerate(test_people)}
    pairs = {"train": [(n, n) for n in people["train"]], "test": [(n, partner[n]) for n in people["test"]]}
    jobs = [(n, seed, size, splits[n], partner.get(n)) for n in wearing]
    renders = dict(zip(wearing, ordered_map(_render_job, jobs, default_workers(len(jobs)), "FashionSynth try-on")))
    captions = {}
    for number in wearing:
        arrays, split = renders[number], splits[number]
        name, root = f"{number:05d}_00", out / splits[number]
        write_bytes(root / "image" / f"{name}.jpg", _encode(arrays["image"], "JPEG"))
        write_bytes(root / "cloth" / f"{name}.jpg", _encode(arrays["cloth"], "JPEG"))
        write_bytes(root / "cloth-mask" / f"{name}.jpg", _encode(arrays["cloth_mask"], "JPEG"))
        write_bytes(root / "image-parse-v3" / f"{name}.png", _encode(arrays["parse"], "PNG", palette=True))
        write_bytes(root / "agnostic-v3.2" / f"{name}.jpg", _encode(arrays["agnostic"], "JPEG"))
        write_bytes(root / "agnostic-mask" / f"{name}_mask.png", _encode(arrays["mask"].astype(np.uint8) * 255, "PNG"))
        write_bytes(root / "image-densepose" / f"{name}.jpg", _encode(arrays["densepose"], "JPEG"))
        write_json(root / "openpose_json" / f"{name}_keypoints.json",
                   {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": arrays["keypoints"]}]})
        write_bytes(root / "im_sketch" / f"{name}.png", _encode(top_sketch(arrays["image"], arrays["parse"]), "PNG"))
        if split == "test":
            sketch = top_sketch(arrays["worn_image"], arrays["worn_parse"])
            write_bytes(root / "im_sketch_unpaired" / f"{name}_{partner[number]:05d}_00.png", _encode(sketch, "PNG"))
        top = _identity(seed, number).garment("top")
        product = Product(f"FS{number:06d}T", _identity(seed, number), top, split)
        sleeves = "long sleeves" if top.cut == "long-sleeved" else "short sleeves"
        captions[f"{number:05d}"] = [f"{top.colour} {product.noun}", sleeves, product.pattern_phrase]
    for split in SPLITS:
        write_text(out / f"{split}_pairs.txt", "".join(f"{a:05d}_00.jpg {b:05d}_00.jpg\n" for a, b in pairs[split]))
    write_json(out / "captions.json", captions)
    counts = {"identities": {split: len(people[split]) for split in SPLITS},
              "skipped": identities - len(wearing), "pairs": {split: len(pairs[split]) for split in SPLITS}}
    write_json(out / "tryon.json", {
        "generator": "atelier FashionSynth try-on", "version": TRYON_VERSION, "atelier_version": __version__,
        "arguments": {"identities": identities, "size": list(size), "seed": seed, "test_fraction": test_fraction},
        "counts": counts, "splits": {split: people[split] for split in SPLITS},
        "skipped_dress_wearers": [n for n in range(1, identities + 1) if n not in splits],
    })  # fmt: skip
    return TryOnSummary(out, seconds=time.perf_counter() - started, **counts)
