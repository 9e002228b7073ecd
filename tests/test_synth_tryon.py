"""FashionSynth in the VITON-HD try-on layout: read back by the VITON-HD reader, masks, agnostic, keypoints, pairs,
sketches drawn where the top is worn (paired) or would be (unpaired), determinism and the CLI flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from atelier.cli import main
from atelier.data.formats.vitonhd import load_vitonhd
from atelier.data.synth.body import complete_skeleton
from atelier.data.synth.identity import sample_identity
from atelier.data.synth.poses import sample_pose
from atelier.data.synth.render import render
from atelier.data.synth.tryon import (
    agnostic_image,
    agnostic_mask,
    body25,
    person_render,
    top_sketch,
    tryon_splits,
    with_top,
    write_tryon,
)
from atelier.errors import UserError

SIZE = (96, 128)
TOP = 4  # FashionSynth's parse label of the top
INK = 128  # a sketch pixel darker than this is a line
DRAW = {"identities": 12, "size": SIZE, "seed": 0, "test_fraction": 0.35}


@pytest.fixture(scope="module")
def tryon(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tryon") / "tryon"
    summary = write_tryon(out, **DRAW)
    assert summary.identities["train"] >= 1 and summary.identities["test"] >= 2
    assert summary.skipped == 12 - sum(summary.identities.values())
    return out


def files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("split", ["train", "test"])
def test_reader_finds_every_file(tryon, split):
    data = load_vitonhd(tryon, split)
    assert data.pairs
    assert data.check() == {}
    assert (data.folder / "im_sketch").is_dir()
    assert (data.folder / "im_sketch_unpaired").is_dir() == (split == "test")
    for pair in data.pairs:
        assert Image.open(data.image(pair)).size == SIZE
        assert Image.open(data.cloth(pair)).size == SIZE
        for path in (data.cloth_mask(pair), data.agnostic_mask(pair), data.parse(pair)):  # size-checked accessors
            assert Image.open(path).size == SIZE
        assert Image.open(data.densepose(pair)).size == SIZE
        assert Image.open(data.sketch(pair, "paired")).size == SIZE
        assert data.keypoints(pair.person).shape == (25, 3)
    captions = data.captions()
    assert all(captions[pair.person[:5]] for pair in data.pairs)


def test_parse_is_a_palette_png_of_labels(tryon):
    data = load_vitonhd(tryon, "train")
    parse = Image.open(data.parse(data.pairs[0]))
    assert parse.mode == "P"
    labels = np.asarray(parse)
    assert labels.max() <= 7 and 4 in labels  # 4: the top


def test_agnostic_grey_exactly_where_the_mask_is():
    identity = next(i for i in (sample_identity(np.random.default_rng([0, n]), n) for n in range(1, 20)) if i.garment("top"))
    pose = sample_pose(np.random.default_rng(5), identity, view="front")
    result = render(identity, pose.keypoints, SIZE, "photo", seed=1)
    points = complete_skeleton(pose.keypoints, (SIZE[1], SIZE[0])).points
    mask = agnostic_mask(result.parse, points)
    photo = np.asarray(result.image)
    agnostic = agnostic_image(photo, mask)
    assert mask.any() and (result.parse == 4).any()
    assert (agnostic[mask] == 128).all()
    assert (agnostic[~mask] == photo[~mask]).all()
    assert mask[result.parse == 4].all()  # the whole top
    assert not mask[np.isin(result.parse, (1, 2, 5, 7))].any()  # head, bottom, shoes kept


def test_written_agnostic_matches_its_mask(tryon):
    data = load_vitonhd(tryon, "test")
    for pair in data.pairs:
        mask = np.asarray(Image.open(data.agnostic_mask(pair))) > 127
        agnostic = np.asarray(Image.open(data.agnostic(pair)).convert("RGB"), dtype=np.int16)
        person = np.asarray(Image.open(data.image(pair)).convert("RGB"), dtype=np.int16)
        assert mask.any() and not mask.all()
        inner = mask & ~np.logical_xor(mask, np.roll(mask, 1, 0)) & ~np.logical_xor(mask, np.roll(mask, 1, 1))
        assert np.abs(agnostic[inner] - 128).mean() < 3  # JPEG: grey up to compression noise
        assert np.abs(agnostic[~mask] - person[~mask]).mean() < 6


def test_keypoints_are_body25_with_mid_hip_the_hips_mean(tryon):
    data = load_vitonhd(tryon, "train")
    for pair in data.pairs:
        path = data.keypoints_file(pair)
        values = json.loads(path.read_text())["people"][0]["pose_keypoints_2d"]
        assert len(values) == 75
        joints = data.keypoints(pair.person)
        assert (joints[[9, 12], 2] == 1).all()
        np.testing.assert_allclose(joints[8, :2], (joints[9, :2] + joints[12, :2]) / 2, atol=1e-3)
        assert (joints[19:] == 0).all()  # no feet in the 18 joints
        known = joints[joints[:, 2] > 0]
        assert (known[:, 0] < SIZE[0]).all() and (known[:, 1] < SIZE[1]).all()


def test_body25_maps_joints_by_name():
    keypoints = -np.ones((18, 2), dtype=np.int32)
    keypoints[4] = (128, 88)  # right wrist (y, x) in the 256x176 frame
    keypoints[8], keypoints[11] = (100, 70), (100, 100)  # hips
    joints = np.asarray(body25(keypoints, (176 * 2, 256 * 2))).reshape(25, 3)
    assert joints[4].tolist() == [176.0, 256.0, 1.0]
    assert joints[9].tolist() == [140.0, 200.0, 1.0] and joints[12].tolist() == [200.0, 200.0, 1.0]
    assert joints[8].tolist() == [170.0, 200.0, 1.0]
    assert joints[0].tolist() == [0.0, 0.0, 0.0]


def dilated_top(parse: np.ndarray) -> np.ndarray:
    """The top's region 2 px wider on every side, where its outline may be inked (XDoG inks an edge's darker side)."""
    return ndimage.binary_dilation(parse == TOP, iterations=2)


def read_gray(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


@pytest.mark.parametrize("split", ["train", "test"])
def test_paired_sketch_is_the_top_where_it_is_worn(tryon, split):
    data = load_vitonhd(tryon, split)
    for pair in data.setting("paired"):
        sketch = read_gray(data.sketch(pair, "paired"))
        parse = np.asarray(Image.open(data.parse(pair)))
        region = dilated_top(parse)
        ink = sketch < INK
        assert sketch.shape == parse.shape
        assert (sketch[~region] == 255).all()  # white wherever the top is not
        assert ink[parse == TOP].mean() > 0.05  # and drawn on it: outline, pattern
        # the outline is drawn where the top meets the rest of the person and the background
        outline = (parse == TOP) & ~ndimage.binary_erosion(parse == TOP)
        assert ndimage.binary_dilation(ink, iterations=2)[outline].mean() > 0.8


def test_unpaired_sketch_is_the_partner_top_on_this_person(tryon):
    data = load_vitonhd(tryon, "test")
    for pair in data.pairs:
        person, partner = int(pair.person[:5]), int(pair.garment[:5])
        unpaired = read_gray(data.sketch(pair, "unpaired"))
        paired = read_gray(data.path("im_sketch", pair))  # the person's own top
        assert unpaired.shape == paired.shape == (SIZE[1], SIZE[0])
        assert (unpaired != paired).mean() > 0.01
        top = sample_identity(np.random.default_rng([DRAW["seed"], partner]), partner).garment("top")
        worn, _, _ = person_render(DRAW["seed"], person, SIZE, top=top)
        # the same person in the same pose: hair, face and shoes where the written photo's parse has them
        parse = np.asarray(Image.open(data.parse(pair)))
        assert (np.isin(worn.parse, (1, 2, 7)) == np.isin(parse, (1, 2, 7))).all()
        ink = unpaired < INK
        assert ink.any() and not ink[~dilated_top(worn.parse)].any()
        assert (unpaired == top_sketch(np.asarray(worn.image), worn.parse)).all()


def test_with_top_swaps_only_the_top():
    identities = [sample_identity(np.random.default_rng([0, n]), n) for n in range(1, 20)]
    first, second = [identity for identity in identities if identity.garment("top")][:2]
    dressed = with_top(first, second.garment("top"))
    assert dressed.garment("top") == second.garment("top")
    assert dressed.garment("bottom") == first.garment("bottom")
    assert dressed.number == first.number and dressed.skin_rgb == first.skin_rgb


def test_pairs(tryon):
    train = load_vitonhd(tryon, "train").pairs
    test = load_vitonhd(tryon, "test").pairs
    assert all(pair.person == pair.garment for pair in train)
    assert all(pair.person != pair.garment for pair in test)
    people = {pair.person for pair in test}
    assert {pair.garment for pair in test} == people  # another TEST person's top, each top once
    assert not people & {pair.person for pair in train}


def test_dress_wearers_are_skipped():
    splits = tryon_splits(12, 0, 0.35)
    for number in range(1, 13):
        identity = sample_identity(np.random.default_rng([0, number]), number)
        assert (number in splits) == (identity.garment("top") is not None)


def test_too_few_test_people_is_one_error():
    with pytest.raises(UserError, match="test people wearing a top"):
        tryon_splits(3, 0, 0.2)


def test_rerun_is_byte_identical(tryon, tmp_path):
    again = write_tryon(tmp_path / "again", **DRAW)
    assert files(again.out) == files(tryon)


def test_cli_flag(tmp_path, capsys):
    out = tmp_path / "fs"
    code = main(["synth", "--out", str(out), "--identities", "12", "--poses-per-identity", "2", "--size", "88x128",
                 "--test-fraction", "0.35", "--tryon", "--tryon-size", "96x128"])
    assert code == 0
    assert "Try-on:" in capsys.readouterr().out
    for split in ("train", "test"):
        assert load_vitonhd(out / "tryon", split).check() == {}
    assert Image.open(next((out / "tryon" / "train" / "image").iterdir())).size == SIZE
