"""Readers of DeepFashion pose-transfer folders and captioned image folders, on small hand-written files."""

import json

import numpy as np
import pytest
from PIL import Image

from atelier.data.formats.captioned import read_captioned_folder, wikiart_caption
from atelier.data.formats.deepfashion import (
    find_annotation_file,
    flatten_name,
    load_split,
    read_annotations,
    read_list,
    read_pairs,
)
from atelier.errors import UserError

A = "fashionWOMENBlouses_Shirtsid0000069302_3back.jpg"
B = "fashionWOMENBlouses_Shirtsid0000069301_1front.jpg"
YS = list(range(10, 28))
XS = [-1] + list(range(20, 37))


def _annotation_text(names):
    return "name:keypoints_y:keypoints_x\n" + "".join(f"{n}:{json.dumps(YS)}:{json.dumps(XS)}\n" for n in names)


def _deepfashion(root, spelling="fasion", images=(A, B), annotated=(A, B), pairs=((A, B), (B, A))):
    """A tiny DeepFashion folder for the test split."""
    (root / "test_highres").mkdir(parents=True)
    for name in images:
        Image.new("RGB", (8, 8)).save(root / "test_highres" / name)
    (root / "test.lst").write_text("".join(f"{n}\n" for n in images))
    (root / f"{spelling}-resize-pairs-test.csv").write_text("from,to\n" + "".join(f"{a},{b}\n" for a, b in pairs))
    (root / f"{spelling}-resize-annotation-test.csv").write_text(_annotation_text(annotated))
    return root


def test_flatten_name_reference_example():
    assert flatten_name("fashion/WOMEN/Blouses_Shirts/id_00000693/02_3_back.jpg") == A
    assert flatten_name("fashion/MEN/Tees_Tanks/id_00000012/01_1_front.jpg") == "fashionMENTees_Tanksid0000001201_1front.jpg"


@pytest.mark.parametrize("spelling", ["fasion", "fashion"])
def test_load_split_reads_both_spellings(tmp_path, spelling):
    split = load_split(_deepfashion(tmp_path, spelling), "test")
    assert split.names == [A, B] and split.pairs == [(A, B), (B, A)]
    assert split.image_path(A).is_file() and split.pairs_file.name.startswith(spelling)
    keypoints = split.keypoints(A)
    assert keypoints.dtype == np.int32 and keypoints.shape == (18, 2)
    assert keypoints[0].tolist() == [10, -1] and keypoints[17].tolist() == [27, 36]
    assert read_list(tmp_path / "test.lst") == [A, B]


def test_missing_annotation_file_names_both_spellings(tmp_path):
    with pytest.raises(UserError, match="fasion-resize-annotation-train.csv and fashion-resize-annotation-train.csv"):
        find_annotation_file(tmp_path, "annotation", "train")


def test_wrong_pairs_header(tmp_path):
    path = tmp_path / "fasion-resize-pairs-test.csv"
    path.write_text("source,target\na.jpg,b.jpg\n")
    with pytest.raises(UserError, match=r"fasion-resize-pairs-test\.csv, line 1: expected the header 'from,to'; found 'source,target'"):
        read_pairs(path)


def test_annotation_errors_name_file_line_and_problem(tmp_path):
    path = tmp_path / "fasion-resize-annotation-test.csv"
    path.write_text(_annotation_text([A]) + f"{B}:{json.dumps(YS[:17])}:{json.dumps(XS)}\n")
    with pytest.raises(UserError, match=r"annotation-test\.csv, line 3, field keypoints_y: expected 18 values.*found 17"):
        read_annotations(path)
    path.write_text(_annotation_text([A]) + f"{B}:[1, 2,:{json.dumps(XS)}\n")
    with pytest.raises(UserError, match=r"annotation-test\.csv, line 3"):
        read_annotations(path)
    path.write_text(_annotation_text([A]) + f"{B}:{json.dumps(YS)}:not json\n")
    with pytest.raises(UserError, match=r"annotation-test\.csv, line 3, field keypoints_x: expected a JSON list"):
        read_annotations(path)
    path.write_text("name,keypoints_y,keypoints_x\n")
    with pytest.raises(UserError, match=r"annotation-test\.csv, line 1: expected the header"):
        read_annotations(path)


def test_pair_naming_missing_image_or_annotation(tmp_path):
    missing = "fashionMENDenimid0000008001_1front.jpg"
    _deepfashion(tmp_path / "a", annotated=(A, B, missing), pairs=((A, B), (A, missing)))
    with pytest.raises(UserError, match=rf"pairs-test\.csv, line 3: image {missing} is missing from .*test_highres"):
        load_split(tmp_path / "a", "test")
    assert len(load_split(tmp_path / "a", "test", check_images=False).pairs) == 2
    _deepfashion(tmp_path / "b", pairs=((A, B), (A, missing)))
    with pytest.raises(UserError, match=rf"pairs-test\.csv, line 3: {missing} has no keypoints"):
        load_split(tmp_path / "b", "test", check_images=False)


def _images(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(root / name)


def test_captioned_metadata_jsonl(tmp_path):
    _images(tmp_path, ["b.png", "sub/a.jpg"])
    records = [{"file_name": "sub/a.jpg", "text": "a red dress"}, {"file_name": "b.png", "text": "a blue top"}]
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    items = read_captioned_folder(tmp_path, caption_prefix="A photo, ")
    assert [(i.path.relative_to(tmp_path).as_posix(), i.caption) for i in items] == [
        ("b.png", "A photo, a blue top"), ("sub/a.jpg", "A photo, a red dress")
    ]  # fmt: skip


def test_captioned_sidecars_and_wikiart_names(tmp_path):
    _images(tmp_path / "kohya", ["x.webp", "y.jpeg"])
    (tmp_path / "kohya" / "x.txt").write_text("first\n")
    (tmp_path / "kohya" / "y.txt").write_text("second")
    assert [i.caption for i in read_captioned_folder(tmp_path / "kohya")] == ["first", "second"]
    _images(tmp_path / "wikiart", ["Impressionism/claude-monet_water-lilies-1916.jpg", "Impressionism/edgar-degas_dancers.jpg"])
    items = read_captioned_folder(tmp_path / "wikiart")
    assert [i.caption for i in items] == ["water lilies 1916", "dancers"]
    assert wikiart_caption(items[0].path.with_name("untitled.jpg")) is None


def test_captioned_errors(tmp_path):
    _images(tmp_path / "meta", ["a.jpg"])
    (tmp_path / "meta" / "metadata.jsonl").write_text('{"file_name": "a.jpg", "text": "ok"}\n{"file_name": "gone.jpg", "text": "x"}\n')
    with pytest.raises(UserError, match=r"metadata\.jsonl, line 2: file_name 'gone.jpg' names no image"):
        read_captioned_folder(tmp_path / "meta")
    (tmp_path / "meta" / "metadata.jsonl").write_text('{"file_name": "a.jpg"}\n')
    with pytest.raises(UserError, match=r"metadata\.jsonl, line 1: missing string field 'text'"):
        read_captioned_folder(tmp_path / "meta")
    (tmp_path / "meta" / "metadata.jsonl").write_text("not json\n")
    with pytest.raises(UserError, match=r"metadata\.jsonl, line 1: not valid JSON"):
        read_captioned_folder(tmp_path / "meta")
    _images(tmp_path / "plain", [f"img{i}.jpg" for i in range(7)])
    (tmp_path / "plain" / "img0.txt").write_text("only one caption")
    with pytest.raises(UserError, match=r"6 images have no caption.*img1\.jpg.*img5\.jpg and 1 more"):
        read_captioned_folder(tmp_path / "plain")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        read_captioned_folder(tmp_path / "empty")
