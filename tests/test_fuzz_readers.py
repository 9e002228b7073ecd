"""Property-based fuzzing of every reader (issue 19): random bytes, and valid files mutated byte by byte, give either a
result or a UserError, nothing else (no UnicodeDecodeError, csv.Error, RecursionError, OverflowError, ...).

Readers: the DeepFashion pairs CSV and annotation (keypoint) CSV, keypoint JSON files and annotation rows
(--target-pose), captioned folders (metadata.jsonl and .txt sidecars), list files, and the retrieval benchmarks'
files (FashionIQ caption and split JSON, Fashion200K label files, FashionGen HDF5), and the try-on benchmarks' pairs
files, keypoint JSON and captions (VITON-HD with MGD's additions, DressCode), and what `atelier prepare-tryon` reads
(OpenPose JSON of either length, parse map PNGs), and the DensePose IUV PNGs `atelier prepare-conditions` reads. A
result is also checked for form where there is one to check (keypoints: 18 finite (y, x) pairs), and a UserError for
being one line. Each property runs 60 examples, drawn from a fixed seed (a failure reproduces; to explore further,
raise max_examples or drop derandomize locally); no deadline, as the machine may be busy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atelier.data.agnostic import LIP, read_pose_points
from atelier.data.formats.captioned import read_captioned_folder
from atelier.data.formats.deepfashion import read_annotations, read_pairs
from atelier.data.formats.dresscode import read_keypoints as read_dresscode_keypoints
from atelier.data.formats.dresscode import read_pairs as read_dresscode_pairs
from atelier.data.formats.fashion200k import read_labels
from atelier.data.formats.fashiongen import FashionGenH5
from atelier.data.formats.fashioniq import read_split, read_triplets
from atelier.data.formats.lists import read_list, select_listed
from atelier.data.formats.vitonhd import read_captions, read_openpose_json
from atelier.data.formats.vitonhd import read_pairs as read_vitonhd_pairs
from atelier.data.human_parsing import read_label_map
from atelier.data.pairs import keypoints_from_json, read_target_pose
from atelier.errors import UserError
from tests.helpers import write_random_photos

FUZZ = settings(max_examples=60, deadline=None, database=None, derandomize=True,  # the same examples every run: no flaky CI
               suppress_health_check=[HealthCheck.too_slow])
YS = [10 * (i + 1) for i in range(18)]
XS = [5 * (i + 1) for i in range(18)]
def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # stored: edits reach the PNG inside too
        archive.writestr("a/p0.png", _png())
        archive.writestr("p1.png", _png())
    return buffer.getvalue()


PNG, ZIP = _png(), _zip()
VALID = {
    "pairs": b"from,to\np0.png,p1.png\np1.png,p0.png\n",
    "annotation": f"name:keypoints_y:keypoints_x\np0.png:{json.dumps(YS)}:{json.dumps(XS)}\n".encode(),
    "keypoints": json.dumps({"keypoints_y": YS, "keypoints_x": XS}).encode(),
    "pairs_json": json.dumps([[y, x] for y, x in zip(YS, XS)]).encode(),
    "metadata": b'{"file_name": "p0.png", "text": "a red dress"}\n{"file_name": "p1.png", "text": "a coat"}\n',
    "list": b"p0.png\np1.png\n",
    "caption": "a red dress, caf\u00e9".encode(),
}


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """`valid` with 1-8 random edits: a byte replaced, inserted or deleted, or a span duplicated."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["replace", "insert", "delete", "duplicate"]))
        byte = draw(st.integers(0, 255))
        if kind == "insert" or not data:
            data.insert(at, byte)
        elif kind == "replace":
            data[min(at, len(data) - 1)] = byte
        elif kind == "delete":
            del data[min(at, len(data) - 1)]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


def file_bytes(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, random text (UTF-8 encoded, so the parsers past decoding are reached), or a mutated valid file."""
    return st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode), mutated(valid))


def result_or_user_error(call):
    """Run a reader: its result, or None after a UserError; any other exception fails the property."""
    try:
        return call()
    except UserError as error:
        assert "\n" not in str(error)  # one line
        return None


def check_keypoints(keypoints) -> None:
    array = np.asarray(keypoints)
    assert array.shape == (18, 2) and np.isfinite(array).all()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A folder with two images (p0.png, p1.png), reused by every example (hypothesis runs them one at a time)."""
    folder = tmp_path_factory.mktemp("fuzz")
    write_random_photos(folder, 2, (8, 8))
    return folder


@FUZZ
@given(data=file_bytes(VALID["pairs"]))
def test_pairs_csv(scratch: Path, data: bytes) -> None:
    (scratch / "pairs.csv").write_bytes(data)
    pairs = result_or_user_error(lambda: read_pairs(scratch / "pairs.csv"))
    assert pairs is None or all(len(pair) == 2 and all(pair) for pair in pairs)


@FUZZ
@given(data=file_bytes(VALID["annotation"]))
def test_annotation_csv(scratch: Path, data: bytes) -> None:
    (scratch / "annotation.csv").write_bytes(data)
    annotations = result_or_user_error(lambda: read_annotations(scratch / "annotation.csv"))
    for keypoints in (annotations or {}).values():
        check_keypoints(keypoints)
        assert keypoints.dtype == np.int32 and keypoints.min() >= -1


@FUZZ
@given(data=st.one_of(file_bytes(VALID["keypoints"]), mutated(VALID["pairs_json"])))
def test_keypoint_json_file(scratch: Path, data: bytes) -> None:
    (scratch / "pose.json").write_bytes(data)
    found = result_or_user_error(lambda: read_target_pose(str(scratch / "pose.json"), frame_hw=(256, 176)))
    if found is not None:
        check_keypoints(found[1])


def json_values(keys: list[str], max_leaves: int):
    """Any JSON value (nulls, booleans, numbers with NaN and inf, short texts, lists, objects keyed by `keys`)."""
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda children: st.lists(children, max_size=20) | st.dictionaries(st.sampled_from(keys), children, max_size=3),
        max_leaves=max_leaves,
    )


JSON_VALUES = json_values(["keypoints_y", "keypoints_x", "other"], 60)


@FUZZ
@given(data=st.one_of(JSON_VALUES, st.fixed_dictionaries({"keypoints_y": st.lists(JSON_VALUES, min_size=18, max_size=18),
                                                            "keypoints_x": st.lists(st.floats(), min_size=18, max_size=18)})))
def test_keypoint_json_values(data) -> None:
    found = result_or_user_error(lambda: keypoints_from_json(data, "pose.json", (256, 176)))
    if found is not None:
        check_keypoints(found)


@FUZZ
@given(row=st.one_of(st.text(max_size=120), mutated(f"b.jpg:{json.dumps(YS)}:{json.dumps(XS)}".encode()).map(
    lambda data: data.decode("utf-8", "replace"))))
def test_annotation_row(row: str) -> None:
    found = result_or_user_error(lambda: read_target_pose(row, annotation_file=None, frame_hw=(256, 176))
                                 if ":" in row and "[" in row else ("", np.zeros((18, 2))))
    if found is not None:
        check_keypoints(found[1])


@FUZZ
@given(data=file_bytes(VALID["metadata"]))
def test_captioned_folder_metadata(scratch: Path, data: bytes) -> None:
    (scratch / "metadata.jsonl").write_bytes(data)
    try:
        items = result_or_user_error(lambda: read_captioned_folder(scratch))
    finally:
        (scratch / "metadata.jsonl").unlink()
    assert items is None or [item.path.name for item in items] == ["p0.png", "p1.png"]


@FUZZ
@given(first=file_bytes(VALID["caption"]), second=file_bytes(VALID["caption"]))
def test_captioned_folder_sidecars(scratch: Path, first: bytes, second: bytes) -> None:
    (scratch / "p0.txt").write_bytes(first)
    (scratch / "p1.txt").write_bytes(second)
    try:
        items = result_or_user_error(lambda: read_captioned_folder(scratch, caption_prefix="A "))
    finally:
        (scratch / "p0.txt").unlink()
        (scratch / "p1.txt").unlink()
    assert items is None or all(isinstance(item.caption, str) and item.caption.startswith("A ") for item in items)


@FUZZ
@given(data=file_bytes(VALID["list"]))
def test_list_file(scratch: Path, data: bytes) -> None:
    (scratch / "train.lst").write_bytes(data)
    names = result_or_user_error(lambda: read_list(scratch / "train.lst"))
    assert names is None or all(name and name == name.strip() for name in names)
    images = [scratch / "p0.png", scratch / "p1.png"]
    chosen = result_or_user_error(lambda: select_listed(images, scratch / "train.lst"))
    assert chosen is None or set(chosen) <= set(images)


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), mutated(PNG), mutated(ZIP)))
def test_app_uploads(scratch: Path, data: bytes) -> None:
    """What a browser uploads to the app: as an image, and as a zip of images (the Evaluate tab)."""
    import shutil

    from atelier.app.uploads import Limits, check_image_file, image_folder

    (scratch / "upload.png").write_bytes(data)
    (scratch / "upload.zip").write_bytes(data)
    limits = Limits(max_bytes=10_000, max_side=64, max_unzipped_bytes=100_000)
    result_or_user_error(lambda: check_image_file(scratch / "upload.png", "photo", "upload.png", limits))
    shutil.rmtree(scratch / "unzipped", ignore_errors=True)
    folder = result_or_user_error(lambda: image_folder([str(scratch / "upload.zip")], "images", scratch / "unzipped", limits))
    assert folder is None or any(folder.iterdir())


RETRIEVAL = {
    "fashioniq_captions": json.dumps([
        {"target": "B008BHCT58", "candidate": "B003FGW7MK", "captions": ["is solid black", "is longer"]},
        {"target": "B003FGW7MK", "candidate": "B008BHCT58", "captions": ["has a print", "is red"]}]).encode(),
    "fashioniq_split": json.dumps(["B008BHCT58", "B003FGW7MK", "B00BZ8GPVO"]).encode(),
    "fashion200k": b"women/dresses/a/51727804_0.jpeg\t0.82\tblack midi dress\nwomen/dresses/b/524_1.jpeg\t1\tred dress\n",
}


@FUZZ
@given(data=file_bytes(RETRIEVAL["fashioniq_captions"]))
def test_fashioniq_caption_file(scratch: Path, data: bytes) -> None:
    (scratch / "captions").mkdir(exist_ok=True)
    (scratch / "captions" / "cap.dress.val.json").write_bytes(data)
    triplets = result_or_user_error(lambda: read_triplets(scratch, "dress", "val"))
    for triplet in triplets or []:
        assert triplet.candidate and triplet.target and len(triplet.captions) == 2
        assert all(isinstance(caption, str) for caption in triplet.captions)


@FUZZ
@given(data=file_bytes(RETRIEVAL["fashioniq_split"]))
def test_fashioniq_split_file(scratch: Path, data: bytes) -> None:
    (scratch / "image_splits").mkdir(exist_ok=True)
    (scratch / "image_splits" / "split.shirt.test.json").write_bytes(data)
    gallery = result_or_user_error(lambda: read_split(scratch, "shirt", "test"))
    assert gallery is None or (len(set(gallery)) == len(gallery) and all("/" not in a for a in gallery))


@FUZZ
@given(data=file_bytes(RETRIEVAL["fashion200k"]))
def test_fashion200k_label_file(scratch: Path, data: bytes) -> None:
    (scratch / "dress_train_detect_all.txt").write_bytes(data)
    items = result_or_user_error(lambda: read_labels(scratch / "dress_train_detect_all.txt"))
    for item in items or []:
        assert item.path and item.caption and np.isfinite(item.score) and item.category == "dress"


def _fashiongen_h5() -> bytes:
    """A two-item FashionGen HDF5 file (4 x 4 images, strings as (N, 1) fixed-length bytes), as bytes."""
    import tempfile

    import h5py

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fashiongen.h5"
        with h5py.File(path, "w") as file:
            file.create_dataset("input_image", data=np.full((2, 4, 4, 3), 7, np.uint8))
            for key in ("input_description", "input_category", "input_productID"):
                file.create_dataset(key, data=np.array([[b"a red dress"], [b"DRESSES"]]))
        return path.read_bytes()


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), mutated(_fashiongen_h5())))
def test_fashiongen_h5(scratch: Path, data: bytes) -> None:
    (scratch / "fashiongen.h5").write_bytes(data)

    def read_all():
        with FashionGenH5(scratch / "fashiongen.h5") as items:
            return [(items.image(i).size, items.description(i), items.category(i), items.product_id(i))
                    for i in range(len(items))]

    rows = result_or_user_error(read_all)
    assert rows is None or all(size[0] > 0 and all(isinstance(text, str) for text in texts) for size, *texts in rows)


TRYON = {
    "vitonhd_pairs": b"00006_00.jpg 00008_00.jpg\n\n00008_00.jpg\t00006_00.jpg\n",
    "openpose": json.dumps({"version": 1.3, "people": [
        {"person_id": [-1], "pose_keypoints_2d": [float(v % 97) for v in range(75)]}]}).encode(),
    "captions": json.dumps({"00006": ["red top", "short sleeves"], "00008": ["stripes"]}).encode(),
    "dresscode_pairs": b"000001_0.jpg 000002_1.jpg 0\n013563_0.jpg 013563_1.jpg 1\n020714_0.jpg 020714_1.jpg 2\n",
    "dresscode_keypoints": json.dumps({"keypoints": [[100.0 + j, 200.0 + j, 0.9, j] for j in range(18)]}).encode(),
}


@FUZZ
@given(data=file_bytes(TRYON["vitonhd_pairs"]))
def test_vitonhd_pairs_file(scratch: Path, data: bytes) -> None:
    (scratch / "test_pairs.txt").write_bytes(data)
    pairs = result_or_user_error(lambda: read_vitonhd_pairs(scratch / "test_pairs.txt"))
    for pair in pairs or []:
        assert pair.person and pair.garment and "/" not in pair.person + pair.garment and pair.line > 0


@FUZZ
@given(data=file_bytes(TRYON["openpose"]))
def test_openpose_keypoint_json(scratch: Path, data: bytes) -> None:
    (scratch / "p0_keypoints.json").write_bytes(data)
    keypoints = result_or_user_error(lambda: read_openpose_json(scratch / "p0_keypoints.json"))
    assert keypoints is None or (keypoints.shape == (25, 3) and np.isfinite(keypoints).all())


@FUZZ
@given(data=file_bytes(TRYON["captions"]))
def test_mgd_captions(scratch: Path, data: bytes) -> None:
    (scratch / "captions.json").write_bytes(data)
    captions = result_or_user_error(lambda: read_captions(scratch / "captions.json"))
    for key, phrases in (captions or {}).items():
        assert isinstance(key, str) and all(isinstance(phrase, str) for phrase in phrases)


@FUZZ
@given(data=file_bytes(TRYON["dresscode_pairs"]), in_category=st.booleans())
def test_dresscode_pairs_file(scratch: Path, data: bytes, in_category: bool) -> None:
    (scratch / "train_pairs.txt").write_bytes(data)
    category = "lower_body" if in_category else None
    pairs = result_or_user_error(lambda: read_dresscode_pairs(scratch / "train_pairs.txt", category))
    for pair in pairs or []:
        assert pair.person.endswith("_0.jpg") and pair.garment.endswith("_1.jpg") and pair.person_id
        assert pair.category == (category or pair.category) and pair.category in ("upper_body", "lower_body", "dresses")


@FUZZ
@given(data=file_bytes(TRYON["dresscode_keypoints"]))
def test_dresscode_keypoint_json(scratch: Path, data: bytes) -> None:
    (scratch / "000001_2.json").write_bytes(data)
    keypoints = result_or_user_error(lambda: read_dresscode_keypoints(scratch / "000001_2.json"))
    assert keypoints is None or (keypoints.shape[0] == 18 and keypoints.shape[1] >= 2 and np.isfinite(keypoints).all())


TRYON_VALUES = json_values(["people", "pose_keypoints_2d", "keypoints"], 80)


@FUZZ
@given(data=st.one_of(TRYON_VALUES, st.builds(lambda values: {"people": [{"pose_keypoints_2d": values}]},
                                               st.lists(TRYON_VALUES, min_size=75, max_size=75)),
                      st.builds(lambda rows: {"keypoints": rows}, st.lists(st.lists(TRYON_VALUES, max_size=4),
                                                                           min_size=18, max_size=18))))
def test_tryon_keypoint_json_values(scratch: Path, data) -> None:
    """Structured JSON (any values where the numbers go) through both try-on keypoint readers."""
    (scratch / "values.json").write_text(json.dumps(data))
    openpose = result_or_user_error(lambda: read_openpose_json(scratch / "values.json"))
    assert openpose is None or (openpose.shape == (25, 3) and np.isfinite(openpose).all())
    dresscode = result_or_user_error(lambda: read_dresscode_keypoints(scratch / "values.json"))
    assert dresscode is None or (dresscode.shape[0] == 18 and np.isfinite(dresscode).all())


def _label_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray((np.arange(48, dtype=np.uint8) % 20).reshape(6, 8), "P")
    image.putpalette([value for rgb in LIP.palette for value in rgb])
    image.save(buffer, format="PNG")
    return buffer.getvalue()


PREPARE = {
    "coco18": json.dumps({"people": [{"pose_keypoints_2d": [float(v % 89) for v in range(54)]}]}).encode(),
    "label_png": _label_png(),
}


@FUZZ
@given(data=st.one_of(file_bytes(TRYON["openpose"]), file_bytes(PREPARE["coco18"])))
def test_pose_points_of_either_length(scratch: Path, data: bytes) -> None:
    (scratch / "p1_keypoints.json").write_bytes(data)
    found = result_or_user_error(lambda: read_pose_points(scratch / "p1_keypoints.json"))
    if found is not None:
        points, joints = found
        assert joints in (18, 25) and points.shape == (18, 2)
        assert (np.isfinite(points).all(axis=1) | np.isnan(points).all(axis=1)).all()  # a joint is there or not


@FUZZ
@given(data=file_bytes(PREPARE["label_png"]))
def test_parse_map_png(scratch: Path, data: bytes) -> None:
    (scratch / "parse.png").write_bytes(data)
    labels = result_or_user_error(lambda: read_label_map(scratch / "parse.png", LIP))
    assert labels is None or (labels.ndim == 2 and labels.dtype == np.uint8 and labels.max() < LIP.count)


def _iuv_png() -> bytes:
    """A small valid IUV PNG as MCLD writes them: red V*255, green U*255, blue the part index."""
    import io

    from PIL import Image

    from atelier.data.densepose import iuv_array

    parts = (np.arange(48).reshape(6, 8) % 25).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(iuv_array(parts, np.full((6, 8), 0.25), np.full((6, 8), 0.75)), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@FUZZ
@given(data=file_bytes(_iuv_png()))
def test_densepose_iuv_png(scratch: Path, data: bytes) -> None:
    from atelier.data.densepose import read_iuv

    (scratch / "p0.png").write_bytes(data)
    iuv = result_or_user_error(lambda: read_iuv(scratch / "p0.png"))
    if iuv is not None:
        assert iuv.parts.ndim == 2 and iuv.parts.dtype == np.uint8 and iuv.parts.max(initial=0) <= 24
        assert iuv.u.shape == iuv.parts.shape == iuv.v.shape and 0 <= iuv.u.min(initial=0) and iuv.v.max(initial=0) <= 1
        with pytest.raises(UserError, match="p0.png: the DensePose image is"):
            read_iuv(scratch / "p0.png", (iuv.size[0] + 1, iuv.size[1]))  # another photo's size
