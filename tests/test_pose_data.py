"""Pose-transfer pairs on hand-written real-format folders (DeepFashion, Market-1501), FashionSynth, and bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.data.pairs import PosePairs, load_pairs, read_target_pose, stack_pairs
from atelier.errors import UserError

A = "fashionWOMENDressesid0000003901_1front.jpg"
B = "fashionWOMENDressesid0000003902_3back.jpg"
# A standing person in the 256x176 frame, (y, x); left ear missing (-1).
YS = [40, 58, 64, 105, 148, 64, 105, 148, 136, 190, 240, 136, 190, 240, 36, 36, 38, -1]
XS = [88, 88, 66, 60, 58, 110, 116, 118, 74, 72, 70, 102, 104, 106, 83, 93, 78, -1]
M1, M2 = "0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg"  # Market-1501 names


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


def _row(name, ys=YS, xs=XS):
    return f"{name}:{json.dumps(ys)}:{json.dumps(xs)}\n"


def _folder(root, split, image_dir, pairs_csv, annotation_csv, size, names=(A, B), rows=None, pairs=((A, B), (B, A))):
    """Images of `size` (W, H), a pairs CSV and an annotation CSV written by hand in the real formats."""
    (root / image_dir).mkdir(parents=True)
    for index, name in enumerate(names):
        Image.new("RGB", size, (40 * index, 90, 200)).save(root / image_dir / name)
    (root / pairs_csv).write_text("from,to\n" + "".join(f"{a},{b}\n" for a, b in pairs))
    (root / annotation_csv).write_text("name:keypoints_y:keypoints_x\n" + "".join(rows or [_row(n) for n in names]))
    return root


def _deepfashion(root, **kwargs):
    return _folder(root, "test", "test_highres", "fasion-resize-pairs-test.csv", "fasion-resize-annotation-test.csv",
                   (176, 256), **kwargs)


def _market(root, **kwargs):
    kwargs.setdefault("names", (M1, M2))
    kwargs.setdefault("pairs", ((M1, M2),))
    small = ([y // 2 if y >= 0 else -1 for y in YS], [x * 64 // 176 if x >= 0 else -1 for x in XS])  # in 128x64
    kwargs.setdefault("rows", [_row(M1, *small), _row(M2, *small)])
    return _folder(root, "test", "test", "market-pairs-test.csv", "market-annotation-test.csv", (64, 128), **kwargs)


def test_deepfashion_pairs_give_target_source_appearance_and_pose_maps(tmp_path):
    split = load_pairs(_deepfashion(tmp_path), "test")
    assert split.layout == "deepfashion" and split.frame_hw == (256, 176) and split.pairs == [(A, B), (B, A)]
    pairs = PosePairs(split, image_hw=(64, 48), appearance_hw=(32, 32), pose_hw=(64, 48))
    item = pairs[0]
    assert (item.source_name, item.target_name) == (A, B)
    assert item.target.shape == item.source.shape == (3, 64, 48) and item.appearance.shape == (3, 32, 32)
    assert item.source_pose.shape == item.target_pose.shape == (21, 64, 48)
    assert -1 <= float(item.target.min()) and float(item.target.max()) <= 1
    assert not torch.equal(item.source, item.target)  # the two images differ in colour
    neck = item.target_pose[3 + 1]  # heatmap of joint 1 (neck, y 58 x 88 in the 256x176 frame)
    assert tuple(np.unravel_index(int(neck.argmax()), neck.shape)) == (58 * 64 // 256, 88 * 48 // 176)
    assert not item.target_pose[3 + 17].any()  # the missing left ear has an empty heatmap
    batch = stack_pairs([pairs[0], pairs[1]])
    assert batch.target.shape == (2, 3, 64, 48) and batch.source_name == [A, B]


def test_market_layout_is_detected_and_uses_its_128x64_frame(tmp_path):
    split = load_pairs(_market(tmp_path), "test")
    assert split.layout == "market" and split.frame_hw == (128, 64) and split.pairs == [(M1, M2)]
    full = PosePairs(split, (128, 64), (128, 64), (128, 64))[0].source_pose[4]  # the neck's heatmap, at (29, 32)
    half = PosePairs(split, (128, 64), (128, 64), (64, 32))[0].source_pose[4]
    assert tuple(np.unravel_index(int(full.argmax()), full.shape)) == (29, 32)
    assert tuple(np.unravel_index(int(half.argmax()), half.shape)) == (14, 16)


def test_fashionsynth_deepfashion_folder_works_unchanged(synth_root):
    split = load_pairs(synth_root / "deepfashion", "train")
    pairs = PosePairs(split, (64, 48), (64, 48), (64, 48), max_pairs=3)
    assert len(pairs) == 3 and pairs[2].target_pose.shape == (21, 64, 48)
    assert set(pairs.names()) <= set(split.annotations)


def test_missing_annotation_file(tmp_path):
    root = _deepfashion(tmp_path / "df")
    (root / "fasion-resize-annotation-test.csv").unlink()
    with pytest.raises(UserError, match=r"fasion-resize-annotation-test\.csv and fashion-resize-annotation-test\.csv"):
        load_pairs(root, "test")
    market = _market(tmp_path / "m")
    (market / "market-annotation-test.csv").unlink()
    with pytest.raises(UserError, match=r"market-annotation-test\.csv not found"):
        load_pairs(market, "test")


def test_pose_with_the_wrong_joint_count(tmp_path):
    rows = [_row(A), _row(B, YS[:17], XS[:17])]
    with pytest.raises(UserError, match=r"annotation-test\.csv, line 3, field keypoints_y: expected 18 values .*found 17"):
        load_pairs(_deepfashion(tmp_path, rows=rows), "test")
    with pytest.raises(UserError, match=r"expected 18 joints .*found 17"):
        read_target_pose(f"B.jpg:{json.dumps(YS[:17])}:{json.dumps(XS[:17])}")
    (tmp_path / "pose.json").write_text(json.dumps([[y, x] for y, x in zip(YS, XS)][:16]))
    with pytest.raises(UserError, match=r"pose\.json: expected 18 joints .*found 16"):
        read_target_pose(str(tmp_path / "pose.json"))


def test_pair_naming_a_missing_image(tmp_path):
    missing = "fashionWOMENDressesid0000003903_2side.jpg"
    root = _deepfashion(tmp_path / "df", rows=[_row(A), _row(B), _row(missing)], pairs=((A, B), (A, missing)))
    with pytest.raises(UserError, match=rf"line 3: image {missing} is missing from .*test_highres"):
        load_pairs(root, "test")
    market = _market(tmp_path / "m", pairs=((M1, M2), (M2, "0003_c1s1_000001_01.jpg")))
    with pytest.raises(UserError, match=r"market-pairs-test\.csv, pair 2: 0003_c1s1_000001_01\.jpg has no keypoints"):
        load_pairs(market, "test")


def test_target_pose_from_json_row_or_an_annotated_image(tmp_path):
    root = _deepfashion(tmp_path)
    expected = np.stack([YS, XS], axis=1).astype(np.float32)
    (tmp_path / "dict.json").write_text(json.dumps({"keypoints_y": YS, "keypoints_x": XS}))
    (tmp_path / "pairs.json").write_text(json.dumps([[y, x] for y, x in zip(YS, XS)]))
    for spec, name in [(str(tmp_path / "dict.json"), "dict"), (str(tmp_path / "pairs.json"), "pairs"),
                       (_row(B).strip(), B[:-4]), (str(root / "test_highres" / B), B[:-4])]:
        found, keypoints = read_target_pose(spec)
        assert found == name and np.array_equal(keypoints, expected), spec
    found, _ = read_target_pose(B, annotation_file=root / "fasion-resize-annotation-test.csv")
    assert found == B[:-4]
    with pytest.raises(UserError, match="no keypoints for nobody.jpg"):
        read_target_pose(str(root / "test_highres" / "nobody.jpg"))
