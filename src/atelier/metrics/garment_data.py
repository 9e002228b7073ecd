"""The inputs of the `mgd` protocol on a VITON-HD or DressCode multimodal root: the test pairs of a setting, the
outputs matched to them, and each pair's caption, input sketch and input pose (atelier.metrics.mgd scores them).

Inputs, as MGD's dataset code (`src/datasets/{vitonhd,dresscode}.py`) reads them for each test pair of the setting:
- the output `<person stem>.(jpg|png)` (its eval.py writes `images/<im_name>` with the `.jpg` kept);
- the caption: captions.json[garment id] (VITON-HD: ids with >= 3 phrases; DressCode: fine_captions.json ids with >= 3,
  then coarse_captions.json), phrases joined with ", " (test order, unshuffled); `--captions FILE` replaces them;
- the sketch: VITON-HD `test/im_sketch/<person stem>.png` (paired) or `test/im_sketch_unpaired/<person stem>_<garment
  stem>.png`; DressCode `<category>/im_sketch/<garment stem>.png` or `<category>/im_sketch_unpaired/<person
  stem>_<garment stem>.png`; `--sketches DIR` holds files of the same names instead;
- the input pose: VITON-HD `test/openpose_json/<stem>_keypoints.json` (BODY_25 in 768x1024, mapped to COCO 18 as MGD
  does); DressCode `<category>/keypoints/<id>_2.json` (18 joints in 384x512).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import numpy as np

from atelier.data.formats import dresscode, vitonhd
from atelier.errors import UserError
from atelier.metrics import garment
from atelier.metrics.images import list_images

MIN_PHRASES = 3  # MGD's loaders keep the captions of garments with at least 3 noun phrases


@dataclass(frozen=True)
class GarmentSample:
    """One test pair as MGD's loader sees it: person image, garment id (captions key), sketch file, keypoint file."""

    person: str
    image: Path
    garment_id: str
    sketch: Path
    keypoints: Path
    frame: tuple[int, int]  # the keypoints' frame, width x height
    source: str  # pairs file and line


@dataclass
class GarmentData:
    """The test pairs of one setting of a VITON-HD or DressCode multimodal root."""

    kind: Literal["vitonhd", "dresscode"]
    root: Path
    samples: list[GarmentSample]
    sketch_folders: list[Path] = field(default_factory=list)
    categories: tuple[str, ...] = ("upper_body",)


def _vitonhd(root: Path, setting: str, sketches: Path | None) -> GarmentData:
    split = vitonhd.load_vitonhd(root, "test", check_images=False)
    pairs_file = vitonhd.pairs_file(root, "test")
    samples = []
    for pair in split.setting(setting):
        sketch = split.sketch(pair, setting)
        samples.append(GarmentSample(pair.person, split.image(pair), vitonhd.garment_id(pair.garment),
                                     sketches / sketch.name if sketches else sketch, split.keypoints_file(pair),
                                     vitonhd.FRAME, f"{pairs_file}, line {pair.line}"))
    folder = split.folder / ("im_sketch" if setting == "paired" else "im_sketch_unpaired")
    return GarmentData("vitonhd", root, samples, [sketches or folder])


def _dresscode(root: Path, setting: str, categories: Iterable[str] | None, sketches: Path | None) -> GarmentData:
    chosen = tuple(categories or [c for c in dresscode.CATEGORIES if (root / c).is_dir()])
    split = dresscode.load_dresscode(root, "test", setting, chosen, check_images=False)
    folder = "im_sketch" if setting == "paired" else "im_sketch_unpaired"
    samples = []
    for pair in split.pairs:
        person, cloth = Path(pair.person).stem, Path(pair.garment).stem
        name = f"{cloth}.png" if setting == "paired" else f"{person}_{cloth}.png"
        sketch = sketches / name if sketches else root / pair.category / folder / name
        samples.append(GarmentSample(pair.person, split.image(pair), pair.garment_id, sketch,
                                     split.keypoints_file(pair), garment.FRAME, pair.source))
    folders = [sketches] if sketches else [root / category / folder for category in chosen]
    return GarmentData("dresscode", root, samples, folders, chosen)


def read_garment_data(data: str | Path, setting: str, categories: Iterable[str] | None = None,
                      sketches: str | Path | None = None) -> GarmentData:
    """The test pairs of `setting` in a VITON-HD (test_pairs.txt, test/) or DressCode (category folders) multimodal
    root; UserError naming --data, --category or --sketches otherwise."""
    root = Path(data)
    if not root.is_dir():
        raise UserError(f"--data {root}: not a folder; pass the VITON-HD or DressCode multimodal root")
    sketches = Path(sketches) if sketches is not None else None
    if sketches is not None and not sketches.is_dir():
        raise UserError(f"--sketches {sketches}: not a folder; expected the input sketches, named as MGD's im_sketch/ "
                        "(paired) or im_sketch_unpaired/ files")
    categories = list(categories or [])
    for category in categories:
        if category not in dresscode.CATEGORIES:
            raise UserError(f"--category {category}: unknown; expected {', '.join(dresscode.CATEGORIES)}")
    if (root / "test_pairs.txt").is_file():
        if set(categories) - {"upper_body"}:
            raise UserError(f"--category {' '.join(categories)}: {root} is VITON-HD, which holds upper_body only")
        return _vitonhd(root, setting, sketches)
    if any((root / category).is_dir() for category in dresscode.CATEGORIES):
        for category in categories:
            if not (root / category).is_dir():
                raise UserError(f"--data {root / category}: category folder not found; --category {category} needs it")
        return _dresscode(root, setting, categories, sketches)
    raise UserError(f"--data {root}: neither VITON-HD (test_pairs.txt, test/) nor DressCode (upper_body/, lower_body/, "
                    "dresses/); pass the multimodal dataset root MGD generated from")


def match_outputs(generated: str | Path, data: GarmentData) -> tuple[list[tuple[Path, GarmentSample]], int]:
    """Each output with its test pair (by the person's stem), and how many pairs have no output; one UserError lists
    the outputs that name no listed person."""
    files = list_images(generated, "--generated")
    by_stem: dict[str, GarmentSample] = {}
    for sample in data.samples:
        by_stem.setdefault(Path(sample.person).stem, sample)
    unmatched = [file.name for file in files if file.stem not in by_stem]
    if unmatched:
        shown = ", ".join(unmatched[:10]) + (f" (and {len(unmatched) - 10} more)" if len(unmatched) > 10 else "")
        raise UserError(f"{len(unmatched)} of {len(files)} outputs in {generated} name no test person of {data.root}: "
                        f"{shown}; name each output like its person (<person stem>.jpg), as MGD's eval.py writes them")
    matches = [(file, by_stem[file.stem]) for file in files]
    return matches, len(by_stem) - len({sample.person for _, sample in matches})


def read_captions(data: GarmentData, captions: str | Path | None) -> tuple[dict[str, str], str]:
    """({garment id: MGD's caption text}, where they came from): `captions` when given, else the dataset's files."""
    if captions is not None:
        path = Path(captions)
        if not path.is_file():
            raise UserError(f"--captions {path}: file not found; expected a captions.json (garment id -> noun phrases)")
        phrases, source = vitonhd.read_captions(path), str(path)
    elif data.kind == "vitonhd":
        split = vitonhd.VitonHDSplit(data.root, "test", ())
        if split.captions_file() is None:
            raise UserError(f"--clip needs the captions: {data.root / 'captions.json'} not found (MGD's multimodal "
                            "annotations); pass --captions FILE")
        phrases, source = split.captions(), str(split.captions_file())
    else:
        split = dresscode.DressCodeSplit(data.root, "test", "paired", ())
        phrases = {key: value for key, value in split.captions("fine").items() if len(value) >= MIN_PHRASES}
        source = f"{data.root / 'fine_captions.json'}"
        if any((data.root / where / "coarse_captions.json").is_file() for where in ("", *dresscode.CATEGORIES)):
            phrases.update(split.captions("coarse"))  # MGD's DressCode loader: fine (>= 3 phrases), then coarse
            source += " + coarse_captions.json"
        return {key: ", ".join(value) for key, value in phrases.items()}, source
    return {key: ", ".join(value) for key, value in phrases.items() if len(value) >= MIN_PHRASES}, source


def captions_for(matches, captions: dict[str, str], source: str) -> list[str]:
    """Each output's caption; one UserError naming the captions file and the outputs whose garment has none."""
    lacking = [(file.name, sample.garment_id) for file, sample in matches if sample.garment_id not in captions]
    if lacking:
        shown = ", ".join(f"{name} (garment {gid})" for name, gid in lacking[:5])
        raise UserError(f"{source}: no caption for {len(lacking)} output{'s' if len(lacking) > 1 else ''}: {shown}; "
                        f"MGD keeps garments with at least {MIN_PHRASES} noun phrases: add them or drop those outputs")
    return [captions[sample.garment_id] for _, sample in matches]


def check_sketches(matches, data: GarmentData) -> str | None:
    """None when every output has its input sketch; the reason when the dataset has no sketch folder at all;
    UserError naming the first missing file when the folder is there but a file is not."""
    if not any(folder.is_dir() for folder in data.sketch_folders):
        return (f"no input sketches: {data.sketch_folders[0]} not found (MGD's multimodal annotations); "
                "pass --sketches DIR")
    lacking = [sample.sketch for _, sample in matches if not sample.sketch.is_file()]
    if lacking:
        raise UserError(f"{lacking[0]}: input sketch not found ({len(lacking)} of {len(matches)} outputs lack theirs); "
                        "expected MGD's im_sketch files, or pass --sketches DIR")
    return None


def reference_keypoints(sample: GarmentSample) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's keypoints of a pair's person in the 384x512 frame (COCO 18) and which MGD draws."""
    if sample.frame == vitonhd.FRAME:
        points = garment.body25_to_coco(vitonhd.read_openpose_json(sample.keypoints))
    else:
        points = dresscode.read_keypoints(sample.keypoints)
    return garment.in_frame(points, sample.frame), garment.drawn(points)


def given_keypoints(folder: Path, output: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """An output's keypoints from `--keypoints` (OpenPose JSON, BODY_25 or COCO 18, in the output's pixels) in the
    384x512 frame and which were found (confidence > 0); UserError naming the file expected or at fault."""
    path = next((p for p in (folder / f"{output.stem}_keypoints.json", folder / f"{output.stem}.json") if p.is_file()),
                None)
    if path is None:
        raise UserError(f"--keypoints {folder}: no {output.stem}_keypoints.json for the output {output.name}; expected "
                        "OpenPose's --write_json file of every output")
    try:
        points = garment.body25_to_coco(vitonhd.read_openpose_json(path, 25))
    except UserError as first:
        try:
            points = vitonhd.read_openpose_json(path, 18)
        except UserError:
            raise first from None
    return garment.in_frame(points, size), points[:, 2] > 0
