"""FashionSynth: a tiny dataset read back through the real readers; labels agree with pixels; runs are deterministic."""

import argparse
import json
import re

import numpy as np
import pytest
from PIL import Image

from atelier.commands import synth as synth_command
from atelier.data.formats.captioned import read_captioned_folder
from atelier.data.formats.deepfashion import load_split, read_list
from atelier.data.synth import PALETTE, Garment, Identity, caption, render, sample_identity, sample_pose, synthesize
from atelier.errors import UserError

ARGS = dict(identities=6, poses_per_identity=3, size=(88, 128), seed=3, test_fraction=0.34)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _identity(name):
    return re.search(r"id(\d{8})\d{2}_", name).group(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("fashionsynth") / "out"
    summary = synthesize(out, workers=1, **ARGS)
    return out, summary


def test_deepfashion_layout_reads_back(dataset):
    out, summary = dataset
    train, test = load_split(out / "deepfashion", "train"), load_split(out / "deepfashion", "test")
    assert summary.images == {"train": len(train.names), "test": len(test.names)}
    assert len(train.names) + len(test.names) == 18 and summary.identities["test"] == 2
    assert {_identity(n) for n in train.names}.isdisjoint({_identity(n) for n in test.names})
    for split in (train, test):
        assert len(split.pairs) == len(split.names) * 2  # all ordered pairs of 3 poses per identity
        assert all(a != b and _identity(a) == _identity(b) for a, b in split.pairs)
        for name in split.names:
            assert re.fullmatch(r"fashion(WOMEN|MEN)[A-Za-z_]+id\d{8}\d{2}_(1front|3back)\.jpg", name)
            with Image.open(split.image_path(name)) as image:
                assert image.size == (88, 128) and image.format == "JPEG"
    assert summary.pairs == {"train": len(train.pairs), "test": len(test.pairs)}
    assert read_list(out / "style" / "test.lst") == test.names


def test_visible_keypoints_land_on_the_drawn_figure(dataset):
    out, _ = dataset
    for split in ("train", "test"):
        data = load_split(out / "deepfashion", split)
        for name in data.names:
            parse = np.asarray(Image.open(out / "labels" / "parse" / f"{name[:-4]}.png"))
            keypoints = data.keypoints(name)
            assert keypoints[1].min() >= 0 and keypoints.max() < 256
            for y, x in keypoints[(keypoints >= 0).all(axis=1)]:
                cy, cx = int(round(y * 128 / 256)), int(round(x * 88 / 176))
                window = parse[max(cy - 2, 0) : cy + 3, max(cx - 2, 0) : cx + 3]
                assert window.any(), f"{name}: keypoint ({y}, {x}) falls on background"


def test_labels_and_style_folders(dataset):
    out, _ = dataset
    attributes = [json.loads(line) for line in (out / "labels" / "attributes.jsonl").read_text().splitlines()]
    assert len(attributes) == 18
    for rendition in ("photo", "illustration"):
        items = read_captioned_folder(out / "style" / rendition)
        captions = {item.path.name: item.caption for item in items}
        assert len(captions) == 18
        for record in attributes:
            assert all(g["colour"] in captions[record["name"]] for g in record["garments"])
            assert (out / "style" / rendition / f"{record['name'][:-4]}.txt").read_text().strip() == record["caption"]
    record = attributes[0]
    parse = np.asarray(Image.open(out / "labels" / "parse" / f"{record['name'][:-4]}.png"))
    mask = np.asarray(Image.open(out / "labels" / "garment_mask" / f"{record['name'][:-4]}.png"))
    assert parse.dtype == np.uint8 and parse.max() <= 7 and {1, 3, 4 if record["garments"][0]["type"] == "top" else 6} <= set(np.unique(parse))
    assert set(np.unique(mask)) <= {0, 255} and np.array_equal(mask == 255, np.isin(parse, (4, 5, 6)))
    photo = np.asarray(Image.open(out / "style" / "photo" / record["name"]), dtype=np.int16)
    drawing = np.asarray(Image.open(out / "style" / "illustration" / record["name"]), dtype=np.int16)
    assert np.abs(photo - drawing).mean() > 3
    manifest = json.loads((out / "fashionsynth.json").read_text())
    assert manifest["arguments"]["size"] == [88, 128] and manifest["counts"]["images"]["test"] == 6


def test_deterministic_across_workers_and_overwrite_refusal(dataset, tmp_path):
    out, _ = dataset
    again = tmp_path / "again"
    synthesize(again, workers=2, **ARGS)
    assert _files(again) == _files(out)
    with pytest.raises(UserError, match="--overwrite"):
        synthesize(again, workers=1, **ARGS)
    synthesize(again, workers=1, overwrite=True, **{**ARGS, "seed": 4})
    other = _files(again)
    assert other.keys() != _files(out).keys() or other != _files(out)
    assert other["deepfashion/fasion-resize-annotation-train.csv"] != _files(out)["deepfashion/fasion-resize-annotation-train.csv"]


def test_render_in_memory_and_caption():
    rng = np.random.default_rng(0)
    identity = sample_identity(rng)
    pose = sample_pose(rng, identity, view="back")
    assert (pose.keypoints[0] == -1).all()  # the face is hidden from behind
    result = render(identity, pose.keypoints, (44, 64), "illustration")
    assert result.image.size == (44, 64) and result.parse.shape == (64, 44) and result.garment_mask.any()
    empty = render(identity, np.full((18, 2), -1), (44, 64))
    assert not empty.parse.any()
    dress = Garment("dress", "sleeveless", "red", PALETTE["red"], "stripes", PALETTE["white"], 10.0)
    person = Identity(1, "WOMEN", "Dresses", (dress,), (240, 200, 170), (30, 20, 20), "long", (0, 0, 0), (230, 230, 230), 20.0, 15.0, 1.0)
    assert caption(person) == "a woman wearing a red striped dress"


def test_cli_command(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    synth_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["synth", "--out", str(tmp_path / "cli"), "--identities", "2", "--poses-per-identity", "2", "--size", "40x64"])
    assert args.func(args) == 0
    assert "4 images" in capsys.readouterr().out
    with pytest.raises(UserError, match="--size"):
        synth_command.run(parser.parse_args(["synth", "--out", str(tmp_path / "x"), "--size", "176by256"]))
    with pytest.raises(UserError, match="--poses-per-identity"):
        synthesize(tmp_path / "bad", poses_per_identity=1)
