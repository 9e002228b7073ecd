"""Readers of the try-on benchmarks as released (VITON-HD with MGD's additions, DressCode), on small hand-written
folders in the real layouts (8x6 images made here)."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from atelier.data.formats.dresscode import DressCodePair, load_dresscode, read_keypoints
from atelier.data.formats.dresscode import read_pairs as read_dresscode_pairs
from atelier.data.formats.vitonhd import (
    FOLDERS,
    TryOnPair,
    garment_id,
    load_vitonhd,
    read_captions,
    read_openpose_json,
    read_pairs,
)
from atelier.errors import UserError

SIZE = (8, 6)  # width x height of every test image

# VITON-HD ------------------------------------------------------------------------------------------------------------

PERSONS = ["00006_00.jpg", "00008_00.jpg"]
TEST_PAIRS = "00006_00.jpg 00008_00.jpg\n\n  00008_00.jpg\t00006_00.jpg  \n"  # unpaired, a blank line, tabs and spaces
BODY_25 = [[10.0 + joint, 20.0 + 2 * joint, 0.5] for joint in range(25)]


def _image(path, size=SIZE, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB" if path.suffix == ".jpg" else "L", size, colour if path.suffix == ".jpg" else 255).save(path)
    return path


def _openpose(path, people):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1.3, "people": people}))
    return path


def _vitonhd(root, split="test", pairs=TEST_PAIRS, mgd=True):
    """A VITON-HD root with one split: every folder filled for PERSONS (each its own garment too), MGD's sketches
    (paired and for the listed unpaired pairs) and captions.json when mgd."""
    (root / f"{split}_pairs.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / f"{split}_pairs.txt").write_text(pairs)
    folder = root / split
    for person in PERSONS:
        stem = person[:-4]
        for sub in ("image", "cloth", "cloth-mask", "agnostic-v3.2", "image-densepose"):
            _image(folder / sub / person)
        _image(folder / "agnostic-mask" / f"{stem}_mask.png")
        _image(folder / "image-parse-v3" / f"{stem}.png")
        _openpose(folder / "openpose_json" / f"{stem}_keypoints.json",
                  [{"person_id": [-1], "pose_keypoints_2d": [v for joint in BODY_25 for v in joint]}])
        if mgd:
            _image(folder / "im_sketch" / f"{stem}.png")
            for other in PERSONS:
                if other != person:
                    _image(folder / "im_sketch_unpaired" / f"{stem}_{other[:-4]}.png")
    if mgd:
        (root / "captions.json").write_text(json.dumps({"00006": ["red top", " short sleeves "], "00008": ["stripes"]}))
    return root


def test_vitonhd_pairs_and_every_path(tmp_path):
    data = load_vitonhd(_vitonhd(tmp_path), "test")
    unpaired = [TryOnPair("00006_00.jpg", "00008_00.jpg"), TryOnPair("00008_00.jpg", "00006_00.jpg")]
    assert list(data.pairs) == data.setting("unpaired") == unpaired
    assert [pair.line for pair in data.pairs] == [1, 3]
    assert data.setting("paired") == [TryOnPair("00006_00.jpg", "00006_00.jpg"), TryOnPair("00008_00.jpg", "00008_00.jpg")]
    pair, split = data.pairs[0], tmp_path / "test"
    assert data.image(pair) == split / "image" / "00006_00.jpg"
    assert data.cloth(pair) == split / "cloth" / "00008_00.jpg"
    assert data.cloth_mask(pair) == split / "cloth-mask" / "00008_00.jpg"
    assert data.agnostic(pair) == split / "agnostic-v3.2" / "00006_00.jpg"
    assert data.agnostic_mask(pair) == split / "agnostic-mask" / "00006_00_mask.png"
    assert data.densepose(pair) == split / "image-densepose" / "00006_00.jpg"
    assert data.parse(pair) == split / "image-parse-v3" / "00006_00.png"
    assert data.keypoints_file(pair) == split / "openpose_json" / "00006_00_keypoints.json"
    assert data.sketch(pair) == split / "im_sketch" / "00006_00.png"
    assert data.sketch(pair, "unpaired") == split / "im_sketch_unpaired" / "00006_00_00008_00.png"
    assert all(data.path(folder, pair).is_file() for folder in FOLDERS)
    assert data.check() == {}


def test_vitonhd_keypoints_and_captions(tmp_path):
    data = load_vitonhd(_vitonhd(tmp_path), "test")
    keypoints = data.keypoints("00006_00")
    assert keypoints.shape == (25, 3) and keypoints.dtype == np.float32
    np.testing.assert_array_equal(keypoints, np.asarray(BODY_25, np.float32))
    np.testing.assert_array_equal(data.keypoints("00006_00.jpg"), keypoints)
    assert data.captions() == {"00006": ["red top", "short sleeves"], "00008": ["stripes"]}
    assert garment_id("00006_00.jpg") == "00006"
    assert data.captions()[garment_id(data.pairs[1].garment)] == ["red top", "short sleeves"]


def test_vitonhd_without_mgd_and_check_names_the_first_missing_file(tmp_path):
    data = load_vitonhd(_vitonhd(tmp_path, mgd=False), "test")
    assert data.check() == {}
    with pytest.raises(UserError, match="captions.json: captions file not found"):
        data.captions()
    (tmp_path / "test" / "image-densepose" / "00006_00.jpg").unlink()
    (tmp_path / "test" / "openpose_json" / "00008_00_keypoints.json").unlink()
    (tmp_path / "test" / "im_sketch_unpaired").mkdir()
    assert data.check() == {
        "image-densepose": tmp_path / "test" / "image-densepose" / "00006_00.jpg",
        "openpose_json": tmp_path / "test" / "openpose_json" / "00008_00_keypoints.json",
        "im_sketch_unpaired": tmp_path / "test" / "im_sketch_unpaired" / "00006_00_00008_00.png",
    }


def test_vitonhd_train_split_and_captions_in_the_split_folder(tmp_path):
    _vitonhd(tmp_path, "train", pairs="00006_00.jpg 00006_00.jpg\n", mgd=False)
    (tmp_path / "train" / "captions.json").write_text('{"00006": ["a top"]}')
    data = load_vitonhd(tmp_path, "train")
    assert data.pairs == (TryOnPair("00006_00.jpg", "00006_00.jpg"),) and data.captions() == {"00006": ["a top"]}


@pytest.mark.parametrize("line, expected", [
    ("00006_00.jpg", r"line 2: 1 field; expected 2, 'person\.jpg cloth\.jpg'"),
    ("00006_00.jpg 00008_00.jpg 0", r"line 2: 3 fields; expected 2"),
    ("../00006_00.jpg 00008_00.jpg", r"line 2: '\.\./00006_00\.jpg' is not a file name"),
])
def test_vitonhd_bad_pairs_lines(tmp_path, line, expected):
    path = tmp_path / "test_pairs.txt"
    path.write_text(f"00006_00.jpg 00008_00.jpg\n{line}\n")
    with pytest.raises(UserError, match=re.escape(str(path)) + ", " + expected):
        read_pairs(path)


def test_vitonhd_pairs_file_missing_or_not_text(tmp_path):
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "train_pairs.txt")) + ": VITON-HD pairs file not found"):
        load_vitonhd(tmp_path, "train")
    (tmp_path / "test_pairs.txt").write_bytes(b"caf\xe9 x\n")
    with pytest.raises(UserError, match=r"test_pairs\.txt, line 1: the VITON-HD pairs file is not UTF-8"):
        load_vitonhd(tmp_path, "test")
    with pytest.raises(UserError, match="unknown split 'val'"):
        load_vitonhd(tmp_path, "val")
    with pytest.raises(UserError, match="VITON-HD root .* is not a folder"):
        load_vitonhd(tmp_path / "nowhere", "test")


@pytest.mark.parametrize("name, what", [("cloth", "garment"), ("image", "person")])
def test_vitonhd_pair_naming_a_missing_image(tmp_path, name, what):
    _vitonhd(tmp_path, pairs="00006_00.jpg 00008_00.jpg\n00008_00.jpg 00006_00.jpg\n")
    (tmp_path / "test" / name / "00006_00.jpg").unlink()
    line = 2 if what == "garment" else 1
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'test_pairs.txt'}, line {line}: the {what} image "
                                                  f"00006_00.jpg does not exist in {tmp_path / 'test' / name}")):
        load_vitonhd(tmp_path, "test")
    assert len(load_vitonhd(tmp_path, "test", check_images=False).pairs) == 2


@pytest.mark.parametrize("folder, file, accessor, what", [
    ("agnostic-mask", "00006_00_mask.png", "agnostic_mask", "agnostic mask"),
    ("cloth-mask", "00008_00.jpg", "cloth_mask", "garment mask"),
    ("image-parse-v3", "00006_00.png", "parse", "parse map"),
])
def test_vitonhd_mask_of_another_size(tmp_path, folder, file, accessor, what):
    data = load_vitonhd(_vitonhd(tmp_path), "test")
    _image(tmp_path / "test" / folder / file, size=(6, 8))
    path = tmp_path / "test" / folder / file
    with pytest.raises(UserError, match=re.escape(f"{path}: the {what} is 6x8 but its image 0000")):
        getattr(data, accessor)(data.pairs[0])


def test_vitonhd_mask_that_is_no_image(tmp_path):
    data = load_vitonhd(_vitonhd(tmp_path), "test")
    path = tmp_path / "test" / "agnostic-mask" / "00006_00_mask.png"
    path.write_bytes(b"not a png")
    with pytest.raises(UserError, match=re.escape(f"{path}: the agnostic mask is not a readable image")):
        data.agnostic_mask(data.pairs[0])
    path.unlink()
    with pytest.raises(UserError, match=re.escape(f"{path}: agnostic mask not found")):
        data.agnostic_mask(data.pairs[0])


def _pose_values(**change):
    values = [v for joint in BODY_25 for v in joint]
    for index, value in change.items():
        values[int(index[1:])] = value
    return values


@pytest.mark.parametrize("data, expected", [
    ({"people": []}, "no people \\(an empty list\\); expected one person detected"),
    ({"version": 1.3}, 'no "people"'),
    ({"people": {"pose_keypoints_2d": []}}, '"people" is an object'),
    ([1, 2], "the file holds a list; expected an OpenPose object"),
    ({"people": [{"face_keypoints_2d": []}]}, 'people\\[0\\] has no "pose_keypoints_2d"'),
    ({"people": [{"pose_keypoints_2d": "1 2 3"}]}, "people\\[0\\]\\.pose_keypoints_2d is text"),
    ({"people": [[1, 2, 3]]}, "people\\[0\\] is a list"),
    ({"people": [{"pose_keypoints_2d": [1.0] * 54}]}, "people\\[0\\]\\.pose_keypoints_2d has 54 numbers; expected 75 \\(25 joints"),
    ({"people": [{"pose_keypoints_2d": _pose_values(i4="12")}]}, "people\\[0\\]\\.pose_keypoints_2d\\[4\\] is '12'; expected a number"),
    ({"people": [{"pose_keypoints_2d": _pose_values(i0=None)}]}, "people\\[0\\]\\.pose_keypoints_2d\\[0\\] is null; expected a number"),
    ({"people": [{"pose_keypoints_2d": _pose_values(i2=True)}]}, "people\\[0\\]\\.pose_keypoints_2d\\[2\\] is true"),
    ({"people": [{"pose_keypoints_2d": _pose_values(i7=float("nan"))}]}, "people\\[0\\]\\.pose_keypoints_2d\\[7\\] is nan; expected a finite"),
    ({"people": [{"pose_keypoints_2d": _pose_values(i7=10**400)}]}, "people\\[0\\]\\.pose_keypoints_2d\\[7\\] is a huge integer"),
])
def test_vitonhd_bad_keypoint_json(tmp_path, data, expected):
    path = tmp_path / "test" / "openpose_json" / "00006_00_keypoints.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=re.escape(str(path)) + ": " + expected) as caught:
        read_openpose_json(path)
    assert "\n" not in str(caught.value)


def test_vitonhd_keypoint_json_not_json(tmp_path):
    path = tmp_path / "k.json"
    path.write_text('{"people": [')
    with pytest.raises(UserError, match=re.escape(f"{path}: not valid JSON")):
        read_openpose_json(path)


@pytest.mark.parametrize("data, expected", [
    (["red top"], "the file holds a list; expected an object {garment id: \\[noun phrases\\]}"),
    ({"00006": "red top"}, "key '00006' holds text; expected a list of noun phrases"),
    ({"00006": ["red top", 3]}, "key '00006', phrase \\[1\\] is a number; expected text"),
    ({"00006": [["red"]]}, "key '00006', phrase \\[0\\] is a list"),
])
def test_bad_captions(tmp_path, data, expected):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=re.escape(str(path)) + ": " + expected):
        read_captions(path)


# DressCode -----------------------------------------------------------------------------------------------------------

IDS = {"upper_body": ["000001", "000002"], "lower_body": ["013563"], "dresses": ["020714"]}
DRESSCODE_KEYPOINTS = [[100.0 + joint, 200.0 + joint, 0.9, joint] for joint in range(18)]


def _dresscode(root, root_pairs=True):
    """A DressCode root: every per-category file for IDS, and the three pairs files at the root (with the category
    column) or in each category folder (without it)."""
    for category, ids in IDS.items():
        folder = root / category
        for id_ in ids:
            _image(folder / "images" / f"{id_}_0.jpg")
            _image(folder / "images" / f"{id_}_1.jpg")
            _image(folder / "skeletons" / f"{id_}_5.jpg")
            _image(folder / "label_maps" / f"{id_}_4.png")
            _image(folder / "dense" / f"{id_}_5.png")
            (folder / "keypoints").mkdir(exist_ok=True)
            (folder / "keypoints" / f"{id_}_2.json").write_text(json.dumps({"keypoints": DRESSCODE_KEYPOINTS}))
    codes = {"upper_body": 0, "lower_body": 1, "dresses": 2}
    for name, garment in (("train_pairs.txt", lambda ids, i: ids[i]), ("test_pairs_paired.txt", lambda ids, i: ids[i]),
                          ("test_pairs_unpaired.txt", lambda ids, i: ids[(i + 1) % len(ids)])):
        if root_pairs:
            (root / name).write_text("".join(f"{id_}_0.jpg {garment(ids, i)}_1.jpg {codes[category]}\n"
                                             for category, ids in IDS.items() for i, id_ in enumerate(ids)))
        else:
            for category, ids in IDS.items():
                (root / category / name).write_text("".join(f"{id_}_0.jpg {garment(ids, i)}_1.jpg\n\n"
                                                            for i, id_ in enumerate(ids)))
    return root


@pytest.mark.parametrize("root_pairs", [True, False])
def test_dresscode_pairs_from_root_or_category_files(tmp_path, root_pairs):
    _dresscode(tmp_path, root_pairs)
    data = load_dresscode(tmp_path, "test", "unpaired")
    assert list(data.pairs) == [
        DressCodePair("000001_0.jpg", "000002_1.jpg", "upper_body"),
        DressCodePair("000002_0.jpg", "000001_1.jpg", "upper_body"),
        DressCodePair("013563_0.jpg", "013563_1.jpg", "lower_body"),
        DressCodePair("020714_0.jpg", "020714_1.jpg", "dresses"),
    ]
    assert [pair.category for pair in load_dresscode(tmp_path, "train", categories=["dresses"]).pairs] == ["dresses"]
    assert len(load_dresscode(tmp_path, "test", "paired").pairs) == 4


def test_dresscode_every_path_and_keypoints(tmp_path):
    data = load_dresscode(_dresscode(tmp_path), "test", "unpaired", categories=["upper_body"])
    pair, folder = data.pairs[0], tmp_path / "upper_body"
    assert (pair.person_id, pair.garment_id) == ("000001", "000002")
    assert data.image(pair) == folder / "images" / "000001_0.jpg"
    assert data.garment(pair) == folder / "images" / "000002_1.jpg"
    assert data.keypoints_file(pair) == folder / "keypoints" / "000001_2.json"
    assert data.skeleton(pair) == folder / "skeletons" / "000001_5.jpg"
    assert data.label_map(pair) == folder / "label_maps" / "000001_4.png"
    assert data.dense(pair) == folder / "dense" / "000001_5.png"
    keypoints = data.keypoints(pair)
    assert keypoints.shape == (18, 4) and keypoints.dtype == np.float32
    np.testing.assert_array_equal(keypoints, np.asarray(DRESSCODE_KEYPOINTS, np.float32))
    assert data.check() == {}
    (folder / "dense" / "000002_5.png").unlink()
    (folder / "keypoints" / "000001_2.json").unlink()
    assert data.check() == {("upper_body", "dense"): folder / "dense" / "000002_5.png",
                            ("upper_body", "keypoints"): folder / "keypoints" / "000001_2.json"}


def test_dresscode_keypoints_with_two_columns(tmp_path):
    path = tmp_path / "000001_2.json"
    path.write_text(json.dumps({"keypoints": [[x, y] for x, y, *_ in DRESSCODE_KEYPOINTS]}))
    assert read_keypoints(path).shape == (18, 2)


def test_dresscode_captions(tmp_path):
    data = load_dresscode(_dresscode(tmp_path), "train")
    with pytest.raises(UserError, match="fine_captions.json: captions file not found"):
        data.captions()
    (tmp_path / "fine_captions.json").write_text(json.dumps({"000001": ["white shirt"]}))
    (tmp_path / "dresses" / "fine_captions.json").write_text(json.dumps({"020714": ["long dress", "floral"]}))
    (tmp_path / "coarse_captions.json").write_text(json.dumps({"000001": ["shirt"]}))
    assert data.captions() == {"000001": ["white shirt"], "020714": ["long dress", "floral"]}
    assert data.captions("coarse") == {"000001": ["shirt"]}
    with pytest.raises(UserError, match="unknown caption kind 'medium'"):
        data.captions("medium")
    (tmp_path / "coarse_captions.json").write_text(json.dumps({"000001": "shirt"}))
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'coarse_captions.json'}: key '000001' holds text")):
        data.captions("coarse")


@pytest.mark.parametrize("line, category, expected", [
    ("000001_0.jpg 000001_1.jpg", None, r"line 2: 2 fields; expected 3, 'X_0\.jpg Y_1\.jpg category'"),
    ("000001_0.jpg 000001_1.jpg 0 extra", "upper_body", r"line 2: 4 fields; expected 2 or 3"),
    ("000001_0.jpg 000001_1.jpg 7", None, r"line 2: category '7'; expected 0 \(upper_body\), 1 \(lower_body\) or 2"),
    ("000001_0.jpg 000001_1.jpg 2", "upper_body", r"line 2: category '2' \(dresses\) in the upper_body folder's"),
    ("000001_1.jpg 000001_0.jpg 0", None, r"line 2: person '000001_1\.jpg' is not named X_0\.jpg"),
    ("000001_0.jpg 000001.jpg 0", None, r"line 2: garment '000001\.jpg' is not named Y_1\.jpg"),
    ("000001_0.jpg /etc/000001_1.jpg 0", None, r"line 2: '/etc/000001_1\.jpg' is not a file name"),
])
def test_dresscode_bad_pairs_lines(tmp_path, line, category, expected):
    path = tmp_path / "train_pairs.txt"
    path.write_text(f"000002_0.jpg 000002_1.jpg 0\n{line}\n")
    with pytest.raises(UserError, match=re.escape(str(path)) + ", " + expected):
        read_dresscode_pairs(path, category)


def test_dresscode_category_names_and_a_matching_column(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("000001_0.jpg 000001_1.jpg lower_body\n")
    assert read_dresscode_pairs(path)[0].category == "lower_body"
    path.write_text("000001_0.jpg 000001_1.jpg 1\n")
    assert read_dresscode_pairs(path, "lower_body")[0].category == "lower_body"


def test_dresscode_pair_naming_a_missing_garment(tmp_path):
    _dresscode(tmp_path)
    (tmp_path / "lower_body" / "images" / "013563_1.jpg").unlink()
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'test_pairs_unpaired.txt'}, line 3: the garment image "
                                                  f"013563_1.jpg does not exist in {tmp_path / 'lower_body' / 'images'}")):
        load_dresscode(tmp_path, "test", "unpaired")
    assert len(load_dresscode(tmp_path, "test", "unpaired", check_images=False).pairs) == 4


def test_dresscode_missing_pairs_files_and_bad_names(tmp_path):
    _dresscode(tmp_path, root_pairs=False)
    (tmp_path / "dresses" / "train_pairs.txt").unlink()
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'dresses' / 'train_pairs.txt'}: DressCode pairs file "
                                                  f"not found, nor {tmp_path / 'train_pairs.txt'}")):
        load_dresscode(tmp_path, "train")
    assert len(load_dresscode(tmp_path, "train", categories=["upper_body", "lower_body"]).pairs) == 3
    with pytest.raises(UserError, match="unknown category 'tops'"):
        load_dresscode(tmp_path, "train", categories=["tops"])
    with pytest.raises(UserError, match="unknown phase 'val'"):
        load_dresscode(tmp_path, "val")
    with pytest.raises(UserError, match="DressCode root .* is not a folder"):
        load_dresscode(tmp_path / "nowhere", "train")


@pytest.mark.parametrize("data, expected", [
    ({"keypoints": []}, '"keypoints" holds 0 joints; expected 18 joints'),
    ({"people": []}, 'no "keypoints"'),
    ([[1, 2]] * 18, "the file holds a list"),
    ({"keypoints": "none"}, '"keypoints" holds text'),
    ({"keypoints": [[1.0, 2.0]] * 17 + [[1.0]]}, r'"keypoints"\[17\] is 1 number; expected \[x, y, score, id\]'),
    ({"keypoints": [[1.0, 2.0, 0.5, 0]] * 17 + [[1.0, 2.0]]}, r'"keypoints"\[17\] has 2 numbers where joint 0 has 4'),
    ({"keypoints": [[1.0, 2.0]] * 17 + [{"x": 1}]}, r'"keypoints"\[17\] is an object'),
    ({"keypoints": [[1.0, "2"]] * 18}, r'"keypoints"\[0\]\[1\] is \'2\'; expected a number'),
    ({"keypoints": [[1.0, float("inf")]] * 18}, r'"keypoints"\[0\]\[1\] is inf; expected a finite number'),
])
def test_dresscode_bad_keypoints(tmp_path, data, expected):
    path = tmp_path / "000001_2.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=re.escape(str(path)) + ": " + expected):
        read_keypoints(path)
