"""Readers of the retrieval benchmarks as released (FashionIQ, FashionGen, Fashion200K), on small hand-written files."""

import json
import re

import h5py
import numpy as np
import pytest
from PIL import Image

from atelier.data.formats.fashion200k import Fashion200KItem, load_fashion200k, read_labels
from atelier.data.formats.fashiongen import FashionGenH5
from atelier.data.formats.fashioniq import (
    Triplet,
    composed_query_text,
    image_path,
    load_fashioniq,
    read_caption_file,
    read_split,
    read_triplets,
)
from atelier.errors import UserError

# FashionIQ ------------------------------------------------------------------------------------------------------------

DRESSES = ["B008BHCT58", "B003FGW7MK", "B00BZ8GPVO"]
SHIRTS = ["B00006M009", "B00B4XJ0BO"]
DRESS_VAL = [
    {"target": "B008BHCT58", "candidate": "B003FGW7MK", "captions": ["is solid black with no sleeves.", "is black"]},
    {"target": "B00BZ8GPVO", "candidate": "B008BHCT58", "captions": [" Has a floral print", "is longer  "]},
]
SHIRT_VAL = [{"target": "B00B4XJ0BO", "candidate": "B00006M009", "captions": ["is darker", "has a collar"]}]


def _write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _fashioniq(root, split="val", captions=None, splits=None, images=DRESSES + SHIRTS):
    """A FashionIQ folder with the dress and shirt categories of one split; images as .png, the last as .jpg."""
    captions = captions or {"dress": DRESS_VAL, "shirt": SHIRT_VAL}
    splits = splits or {"dress": DRESSES, "shirt": SHIRTS}
    for category, entries in captions.items():
        _write_json(root / "captions" / f"cap.{category}.{split}.json", entries)
    for category, asins in splits.items():
        _write_json(root / "image_splits" / f"split.{category}.{split}.json", asins)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for number, asin in enumerate(images):
        Image.new("RGB", (4, 4), (number, 0, 0)).save(root / "images" / f"{asin}{'.jpg' if asin == images[-1] else '.png'}")
    return root


def _caption_error(tmp_path, entry, split="val"):
    """The UserError message read_triplets gives for a dress caption file holding `entry` after a good one."""
    _write_json(tmp_path / "captions" / f"cap.dress.{split}.json", [DRESS_VAL[0], entry])
    with pytest.raises(UserError) as caught:
        read_triplets(tmp_path, "dress", split)
    return str(caught.value)


def test_load_fashioniq_known_answers(tmp_path):
    data = load_fashioniq(_fashioniq(tmp_path), "val", categories=("dress", "shirt"))
    assert data.galleries == {"dress": DRESSES, "shirt": SHIRTS}
    assert data.triplets["dress"] == [
        Triplet("B003FGW7MK", "B008BHCT58", ("is solid black with no sleeves.", "is black"), "dress"),
        Triplet("B008BHCT58", "B00BZ8GPVO", ("Has a floral print", "is longer"), "dress"),
    ]
    assert data.triplets["shirt"] == [Triplet("B00006M009", "B00B4XJ0BO", ("is darker", "has a collar"), "shirt")]
    assert data.image_path("B008BHCT58") == tmp_path / "images" / "B008BHCT58.png"
    assert image_path(tmp_path, "B00B4XJ0BO") == tmp_path / "images" / "B00B4XJ0BO.jpg"


def test_test_split_has_no_target(tmp_path):
    entries = [{"candidate": "B003FGW7MK", "captions": ["is red", "is short"]}]
    _fashioniq(tmp_path, "test", captions={"dress": entries}, splits={"dress": DRESSES})
    data = load_fashioniq(tmp_path, "test", categories=["dress"])
    assert data.triplets == {"dress": [Triplet("B003FGW7MK", None, ("is red", "is short"), "dress")]}


def test_the_papers_query_text():
    assert composed_query_text(("is solid black with no sleeves.", "is black")) == (
        "Is solid black with no sleeves and is black")
    assert composed_query_text([" has a floral PRINT ", "is longer?"]) == "Has a floral PRINT and is longer"


def test_one_caption_is_refused_with_file_and_entry(tmp_path):
    message = _caption_error(tmp_path, {"target": "B008BHCT58", "candidate": "B003FGW7MK", "captions": ["is red"]})
    path = tmp_path / "captions" / "cap.dress.val.json"
    assert message == f'{path} entry [1]: "captions" has 1 caption; expected 2 relative captions'


@pytest.mark.parametrize("entry, expected", [
    ({"candidate": "B003FGW7MK", "captions": ["a", "b"]}, r'entry \[1\]: no "target"'),
    ({"target": "B003FGW7MK", "captions": ["a", "b"]}, r'entry \[1\]: no "candidate"'),
    ({"target": "B008BHCT58", "candidate": 12, "captions": ["a", "b"]}, '"candidate" is a number; expected an image ASIN'),
    ({"target": "../../etc/x", "candidate": "B003FGW7MK", "captions": ["a", "b"]}, "\"target\" is '../../etc/x'"),
    ({"target": "B008BHCT58", "candidate": "B003FGW7MK", "captions": "a and b"}, '"captions" is text; expected a list'),
    ({"target": "B008BHCT58", "candidate": "B003FGW7MK", "captions": ["a", None]}, r'"captions"\[1\] is null'),
    ({"target": "B008BHCT58", "candidate": "B003FGW7MK", "captions": ["a", "b", "c"]}, '"captions" has 3 captions'),
    (["B008BHCT58", "B003FGW7MK"], r"entry \[1\]: found a list; expected an object"),
])
def test_bad_triplets_name_file_entry_and_key(tmp_path, entry, expected):
    message = _caption_error(tmp_path, entry)
    assert message.startswith(str(tmp_path / "captions" / "cap.dress.val.json")) and re.search(expected, message)


def test_bad_caption_files(tmp_path):
    path = tmp_path / "captions" / "cap.dress.val.json"
    with pytest.raises(UserError, match="FashionIQ caption file not found"):
        read_triplets(tmp_path, "dress", "val")
    _write_json(path, {"target": "B008BHCT58"})
    with pytest.raises(UserError, match="the file holds an object; expected a JSON list of"):
        read_triplets(tmp_path, "dress", "val")
    path.write_text('[{"target": "B008BHCT58",')
    with pytest.raises(UserError, match="not valid JSON"):
        read_triplets(tmp_path, "dress", "val")
    with pytest.raises(UserError, match="unknown category 'dresses'"):
        read_triplets(tmp_path, "dresses", "val")


def test_a_triplet_naming_an_image_missing_from_the_split(tmp_path):
    _fashioniq(tmp_path, splits={"dress": DRESSES[:2], "shirt": SHIRTS})
    path = tmp_path / "captions" / "cap.dress.val.json"
    with pytest.raises(UserError, match=re.escape(f"{path} entry [1]: target B00BZ8GPVO is not in the dress val split")):
        load_fashioniq(tmp_path, "val", categories=("dress",))


def test_missing_gallery_images_are_named_then_counted(tmp_path):
    gallery = DRESSES + [f"B00000000{number}" for number in range(7)]
    _fashioniq(tmp_path, splits={"dress": gallery}, captions={"dress": DRESS_VAL})
    with pytest.raises(UserError, match=r"split.dress.val.json: 7 listed images are missing from .*images: "
                                        r"B000000000, B000000001, .*B000000004 and 2 more"):
        load_fashioniq(tmp_path, "val", categories=("dress",))
    assert len(load_fashioniq(tmp_path, "val", categories=("dress",), check_images=False).galleries["dress"]) == 10


def test_image_path_names_the_asin_and_folder(tmp_path):
    with pytest.raises(UserError, match=f"FashionIQ image B0000000XX is missing: .* in {re.escape(str(tmp_path))}"):
        image_path(tmp_path, "B0000000XX")


def test_read_split(tmp_path):
    path = _write_json(tmp_path / "image_splits" / "split.toptee.train.json", ["B1", "B2", "B1"])
    assert read_split(tmp_path, "toptee", "train") == ["B1", "B2"]
    _write_json(path, ["B1", {"asin": "B2"}])
    with pytest.raises(UserError, match=re.escape(f"{path} entry [1] is an object; expected an image ASIN")):
        read_split(tmp_path, "toptee", "train")
    _write_json(path, [])
    assert read_split(tmp_path, "toptee", "train") == []  # an empty gallery (small FashionSynth draws have them)


def test_read_caption_file(tmp_path):
    path = _write_json(tmp_path / "cap.json", [{"image": "B1", "caption": " a red dress ", "source": "blip"},
                                               {"image": "B2", "caption": "a shirt"}, {"image": "B1", "caption": "a red dress"}])
    assert read_caption_file(path) == {"B1": "a red dress", "B2": "a shirt"}
    _write_json(path, [{"image": "B1", "caption": "a red dress"}, {"image": "B1", "caption": "a blue dress"}])
    with pytest.raises(UserError, match=r"entry \[1\]: image B1 already has a different caption \(entry \[0\]\)"):
        read_caption_file(path)
    _write_json(path, [{"image": "B1", "text": "a red dress"}])
    with pytest.raises(UserError, match=r'entry \[0\]: expected an object {"image": ASIN, "caption": text}; found an '
                                        "object with keys image, text"):
        read_caption_file(path)


# FashionGen -----------------------------------------------------------------------------------------------------------

def _fixed(strings, rows=True):
    """Strings as fixed-length bytes, shape (N, 1) as in the released files (or (N,))."""
    data = np.array([s if isinstance(s, bytes) else s.encode() for s in strings], dtype="S")
    return data[:, None] if rows else data


def _fashiongen(path, count=3, drop=(), rows=True, **overrides):
    """A FashionGen HDF5 file of `count` items, image i filled with i; `overrides` replace datasets."""
    datasets = {
        "input_image": np.arange(count, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 6, 3), np.uint8),
        "input_description": _fixed(["Long sleeve wool dress.", "Caf\xe9 cotton shirt ".encode("latin-1"),
                                     "Caf\u00e9 print tee"][:count], rows),
        "input_name": _fixed(["Wool dress", "Cotton shirt", "Print tee"][:count], rows),
        "input_category": _fixed(["DRESSES", "SHIRTS", "TOPS"][:count], rows),
        "input_subcategory": _fixed(["MIDI DRESSES", "SHIRTS", "T-SHIRTS"][:count], rows),
        "input_productID": np.array([[101], [102], [103]][:count], dtype=np.int64),
        "index": np.arange(count),
    } | overrides
    with h5py.File(path, "w") as file:
        for key, value in datasets.items():
            if key not in drop:
                file.create_dataset(key, data=value)
    return path


@pytest.mark.parametrize("rows", [True, False])
def test_fashiongen_known_answers(tmp_path, rows):
    with FashionGenH5(_fashiongen(tmp_path / "fashiongen_256_256_validation.h5", rows=rows)) as data:
        assert len(data) == 3
        image = data.image(2)
        assert image.mode == "RGB" and image.size == (6, 8) and np.asarray(image).max() == np.asarray(image).min() == 2
        assert data.description(0) == "Long sleeve wool dress."
        assert data.description(1) == "Caf\u00e9 cotton shirt"  # Latin-1 bytes, as in the release
        assert data.description(2) == "Caf\u00e9 print tee"  # UTF-8 bytes
        assert (data.name(1), data.category(1), data.subcategory(2)) == ("Cotton shirt", "SHIRTS", "T-SHIRTS")
        assert data.product_id(2) == "103"


def test_fashiongen_product_ids_as_strings(tmp_path):
    with FashionGenH5(_fashiongen(tmp_path / "f.h5", input_productID=_fixed(["P1", "P2", "P3"]))) as data:
        assert data.product_id(0) == "P1"


def test_an_hdf5_without_input_image(tmp_path):
    path = _fashiongen(tmp_path / "f.h5", drop=("input_image",))
    with pytest.raises(UserError, match=f"^{re.escape(str(path))}: no dataset input_image"):
        FashionGenH5(path)


@pytest.mark.parametrize("overrides, expected", [
    ({"input_image": np.zeros((3, 8, 8), np.uint8)}, r"input_image is uint8 of shape \(3, 8, 8\); expected N x H x W x 3"),
    ({"input_image": np.zeros((3, 8, 8, 3), np.float32)}, "input_image is float32 of shape"),
    ({"input_category": _fixed(["DRESSES", "SHIRTS"])}, r"input_category has shape \(2, 1\); expected \(3, 1\) or \(3,\)"),
    ({"input_name": np.zeros((3, 1), np.float64)}, "input_name holds float64; expected byte strings"),
])
def test_fashiongen_bad_datasets(tmp_path, overrides, expected):
    path = _fashiongen(tmp_path / "f.h5", **overrides)
    with pytest.raises(UserError, match=f"^{re.escape(str(path))}: {expected}"):
        FashionGenH5(path)


def test_fashiongen_not_hdf5_or_missing(tmp_path):
    (tmp_path / "f.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(UserError, match="f.h5: not a readable HDF5 file .*; expected a FashionGen file"):
        FashionGenH5(tmp_path / "f.h5")
    with pytest.raises(UserError, match="absent.h5: FashionGen HDF5 file not found"):
        FashionGenH5(tmp_path / "absent.h5")


def test_missing_text_keys_fail_only_when_asked(tmp_path):
    path = _fashiongen(tmp_path / "f.h5", drop=("input_subcategory", "input_description"))
    with FashionGenH5(path) as data:
        assert data.category(0) == "DRESSES"
        with pytest.raises(UserError, match=f"{re.escape(str(path))}: no dataset input_subcategory, so no sub-categories"):
            data.subcategory(0)


def test_fashiongen_indices_and_closing(tmp_path):
    data = FashionGenH5(_fashiongen(tmp_path / "f.h5"))
    for index in (3, -1):
        with pytest.raises(UserError, match=rf"no item {index}; the file holds 3 items \(0 to 2\)"):
            data.image(index)
    with pytest.raises(UserError, match="item index '1' is not an integer"):
        data.category("1")
    assert data.category(np.int64(2)) == "TOPS"
    data.close()
    with pytest.raises(UserError, match="the file was closed"):
        data.category(0)


# Fashion200K ----------------------------------------------------------------------------------------------------------

DRESS_LINES = ("women/dresses/casual_and_day_dresses/51727804/51727804_0.jpeg\t0.821814\tblack knit midi dress\n"
               "\n"
               "women/dresses/cocktail_dresses/52434533/52434533_1.jpeg\t1\t  red lace dress \n")
SKIRT_LINES = "women/skirts/mini_skirts/49988386/49988386_0.jpeg\t0.5\tpleated mini skirt\n"


def _labels(root, files):
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / "labels" / name).write_text(text)
    return root


def test_load_fashion200k_known_answers(tmp_path):
    _labels(tmp_path, {"skirt_train_detect_all.txt": SKIRT_LINES, "dress_train_detect_all.txt": DRESS_LINES,
                       "dress_test_detect_all.txt": SKIRT_LINES})
    assert load_fashion200k(tmp_path, "train") == [
        Fashion200KItem("women/dresses/casual_and_day_dresses/51727804/51727804_0.jpeg", 0.821814,
                        "black knit midi dress", "dress"),
        Fashion200KItem("women/dresses/cocktail_dresses/52434533/52434533_1.jpeg", 1.0, "red lace dress", "dress"),
        Fashion200KItem("women/skirts/mini_skirts/49988386/49988386_0.jpeg", 0.5, "pleated mini skirt", "skirt"),
    ]
    assert [item.category for item in load_fashion200k(tmp_path, "test")] == ["dress"]


@pytest.mark.parametrize("line, expected", [
    ("women/a.jpeg\t0.5", "found 2 tab-separated fields; expected 3"),
    ("women/a.jpeg 0.5 red dress", "found 1 tab-separated fields; expected 3"),
    ("women/a.jpeg\thigh\tred dress", "score 'high' is not a number"),
    ("women/a.jpeg\tnan\tred dress", "score 'nan' is not a number"),
    ("women/a.jpeg\t0.5\t ", "the caption is empty"),
    ("/women/a.jpeg\t0.5\tred dress", "image path '/women/a.jpeg' is not a path inside the dataset root"),
    ("women/../../a.jpeg\t0.5\tred dress", "image path 'women/../../a.jpeg' is not a path inside"),
])
def test_bad_label_lines_name_file_and_line(tmp_path, line, expected):
    path = tmp_path / "top_train_detect_all.txt"
    path.write_text(DRESS_LINES + line + "\n")
    with pytest.raises(UserError, match=f"^{re.escape(str(path))}, line 4: {re.escape(expected)}"):
        read_labels(path)


def test_no_label_files(tmp_path):
    _labels(tmp_path, {"dress_train_detect_all.txt": DRESS_LINES})
    with pytest.raises(UserError, match=r"labels: no \*_test_detect_all.txt label files"):
        load_fashion200k(tmp_path, "test")
    with pytest.raises(UserError, match="unknown split 'val'; expected train or test"):
        load_fashion200k(tmp_path, "val")
