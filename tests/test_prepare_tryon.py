"""The VITON-HD agnostic rule on label sets (atelier.data.agnostic) and `atelier prepare-tryon` on photos the tests
write: FashionSynth people (with their own parse maps, keypoints and tops), hand-made LIP parse maps, drawn masks, a
tiny human parser exported to ONNX, resuming, and the one error naming every missing input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from atelier.data.agnostic import (
    ATR,
    FASHIONSYNTH,
    LIP,
    agnostic_mask,
    body25_from_points,
    cloth_mask,
    coco_points,
    densepose_style,
    garment_mask_agnostic,
    read_pose_points,
    skeleton_figure,
)
from atelier.data.formats.vitonhd import load_vitonhd
from atelier.data.synth.body import complete_skeleton
from atelier.data.synth.identity import sample_identity
from atelier.data.synth.poses import sample_pose
from atelier.data.synth.render import render
from atelier.data.synth.tryon import write_tryon
from tests.helpers import cli_outcome

SIZE = (48, 64)  # W x H of the FashionSynth photos
NAN = float("nan")


# --- the rule -----------------------------------------------------------------------------------------------------
def synth_mask_before_the_move(parse: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The agnostic rule as data/synth/tryon.py wrote it before it moved to atelier.data.agnostic (FashionSynth labels
    0-7, every joint filled): the pinned behaviour the fashionsynth label set must reproduce."""
    height, width = parse.shape
    bones = ((2, 3), (3, 4), (5, 6), (6, 7), (1, 0), (1, 8), (1, 11), (8, 9), (9, 10), (11, 12), (12, 13))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    distances = []
    for a, b in bones:
        start, end = points[a].astype(np.float32), points[b].astype(np.float32)
        direction = end - start
        length2 = max(float(direction @ direction), 1e-6)
        t = np.clip(((ys - start[0]) * direction[0] + (xs - start[1]) * direction[1]) / length2, 0.0, 1.0)
        distances.append(np.hypot(ys - (start[0] + t * direction[0]), xs - (start[1] + t * direction[1])))
    distances = np.stack(distances)
    arms = (parse == 3) & (distances.argmin(0) < 4)
    region = ndimage.binary_dilation((parse == 4) | arms, iterations=max(1, round(3 * height / 256)))
    polygon = Image.new("L", (width, height), 0)
    ImageDraw.Draw(polygon).polygon([(float(points[j, 1]), float(points[j, 0])) for j in (2, 5, 11, 8)], fill=255)
    region |= np.asarray(polygon) > 0
    legs = (parse == 3) & ~arms & (distances[7:].min(0) <= distances[:4].min(0))
    return region & ~np.isin(parse, (1, 2, 5, 7)) & ~legs


def top_wearers(count: int):
    """(identity number, identity) of the first `count` FashionSynth identities wearing a top."""
    found = []
    for number in range(1, 200):
        identity = sample_identity(np.random.default_rng([0, number]), number)
        if identity.garment("top") is not None:
            found.append((number, identity))
        if len(found) == count:
            return found
    raise AssertionError("too few top wearers")


@pytest.mark.parametrize("size", [(96, 128), (192, 256)])
def test_fashionsynth_label_set_reproduces_the_synth_mask(size):
    for number, identity in top_wearers(6):
        pose = sample_pose(np.random.default_rng([7, number]), identity, view="front")
        result = render(identity, pose.keypoints, size, "photo", seed=number)
        points = complete_skeleton(pose.keypoints, (size[1], size[0])).points
        expected = synth_mask_before_the_move(result.parse, points)
        assert expected.any()
        np.testing.assert_array_equal(agnostic_mask(result.parse, points, FASHIONSYNTH), expected)


def lip_person() -> tuple[np.ndarray, np.ndarray]:
    """A hand-made LIP parse map (128x96, a person facing the camera, a background hole in the torso) and its 18
    keypoints (y, x), ears and eyes missing."""
    parse = np.zeros((128, 96), dtype=np.uint8)
    parse[4:16, 36:60] = 2  # hair
    parse[16:32, 38:58] = 13  # face
    parse[34:76, 28:68] = 5  # upper clothes
    parse[44:70, 40:56] = 0  # a hole the parser missed: only the torso polygon covers its middle
    parse[36:80, 16:28] = 15  # right arm (image left)
    parse[36:80, 68:80] = 14  # left arm
    parse[76:110, 30:66] = 9  # pants
    parse[110:120, 32:46], parse[110:120, 50:64] = 17, 16  # legs
    parse[120:128, 32:46], parse[120:128, 50:64] = 19, 18  # shoes
    points = np.full((18, 2), NAN)
    points[:14] = [(24, 48), (34, 48), (38, 30), (58, 22), (78, 22), (38, 66), (58, 74), (78, 74), (76, 38), (96, 38),
                   (118, 39), (76, 58), (96, 58), (118, 57)]  # fmt: skip
    return parse, points


def test_lip_rule_on_a_hand_made_parse_map():
    parse, points = lip_person()
    mask = agnostic_mask(parse, points, LIP)
    assert mask[np.isin(parse, (5, 14, 15))].all()  # upper clothes and both arms
    assert not mask[np.isin(parse, (2, 13, 9, 16, 17, 18, 19))].any()  # hair, face, pants, legs, shoes kept
    assert mask[57, 48]  # the hole's middle: the torso polygon
    assert mask[50, 14] and mask[50, 15] and not mask[50, 13]  # arms dilated 2 px (3 px per 256 of height)
    assert not mask[5, 5] and not mask[100, 90]  # background far off


def test_atr_rule_matches_lip_on_the_same_person():
    parse, points = lip_person()
    lip_to_atr = {0: 0, 2: 2, 13: 11, 5: 4, 15: 15, 14: 14, 9: 6, 17: 13, 16: 12, 19: 10, 18: 9}
    atr = np.vectorize(lip_to_atr.get)(parse).astype(np.uint8)
    np.testing.assert_array_equal(agnostic_mask(atr, points, ATR), agnostic_mask(parse, points, LIP))


def test_missing_joints_shrink_the_polygon_or_skip_it():
    parse, points = lip_person()
    one_hip = points.copy()
    one_hip[8] = NAN  # shoulders and the left hip: a triangle still covering the hole's middle
    assert agnostic_mask(parse, one_hip, LIP)[57, 48]
    no_hips = points.copy()
    no_hips[[8, 11]] = NAN  # two corners: no polygon
    assert not agnostic_mask(parse, no_hips, LIP)[57, 48]
    nothing = np.full((18, 2), NAN)
    assert not densepose_style(parse, nothing).any()  # no bone: nothing to draw
    drawn = densepose_style(parse, no_hips)
    assert drawn[parse > 0, 0].all() and not drawn[parse == 0].any()


def test_a_drawn_mask_is_dilated_plus_the_torso():
    parse, points = lip_person()
    drawn = np.zeros(parse.shape, dtype=bool)
    drawn[34:44, 28:68] = True
    mask = garment_mask_agnostic(drawn, points)
    assert mask[drawn].all() and mask[32, 40] and mask[57, 48]  # dilated up 2 px; the torso
    assert not mask[100, 40]
    figure = skeleton_figure(points, parse.shape)
    assert figure[58, 22] and not figure[5, 90]  # along the right arm, not in a corner


def test_body25_and_coco_convert_both_ways():
    _, points = lip_person()
    values = body25_from_points(points)
    table = np.asarray(values).reshape(25, 3)
    assert table[4].tolist() == [22.0, 78.0, 1.0]  # right wrist (x, y)
    assert table[8].tolist() == [48.0, 76.0, 1.0]  # mid-hip: the hips' mean
    assert (table[15:] == 0).all()  # eyes, ears missing; feet unknown
    back = coco_points(table)
    np.testing.assert_array_equal(back[:14], points[:14])
    assert np.isnan(back[14:]).all()


def test_read_pose_points_tells_body25_from_coco18(tmp_path):
    _, points = lip_person()
    coco = [value for y, x in np.nan_to_num(points) for value in (x, y, 0.0 if x == 0 else 0.9)]
    (tmp_path / "coco.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": coco}]}))
    (tmp_path / "body25.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": body25_from_points(points)}]}))
    for name, joints in (("coco.json", 18), ("body25.json", 25)):
        found, count = read_pose_points(tmp_path / name)
        assert count == joints
        np.testing.assert_array_equal(found[:14], points[:14])
        assert np.isnan(found[14:]).all()


def test_cloth_mask_keeps_the_largest_part_and_fills_holes():
    cloth = np.full((40, 30, 3), 252, dtype=np.uint8)
    cloth[5:35, 5:25] = (200, 30, 30)
    cloth[15:20, 12:17] = 255  # a white print inside the garment
    cloth[1:3, 27:29] = 0  # a speck of dust
    mask = cloth_mask(cloth)
    assert mask[5:35, 5:25].all() and mask.sum() == 30 * 20
    assert not cloth_mask(np.full((8, 8, 3), 250, dtype=np.uint8)).any()


# --- the command --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """FashionSynth people in the VITON-HD layout at 48x64: their photos, parse maps, keypoints and tops."""
    out = tmp_path_factory.mktemp("synth") / "tryon"
    write_tryon(out, identities=12, size=SIZE, seed=0, test_fraction=0.35)
    return out / "train"


def prepare(synth: Path, out: Path, *extra: str, parse: bool = True, keypoints: bool = True) -> tuple[int, str]:
    argv = ["prepare-tryon", "--images", str(synth / "image"), "--out", str(out)]
    argv += ["--parse", str(synth / "image-parse-v3"), "--labels", "fashionsynth"] if parse else []
    argv += ["--keypoints", str(synth / "openpose_json")] if keypoints else []
    return cli_outcome([*argv, *extra])


def people(synth: Path) -> list[str]:
    return sorted(path.stem for path in (synth / "image").iterdir())


def test_from_parse_maps_gives_fashionsynths_own_files(synth, tmp_path):
    code, output = prepare(synth, tmp_path / "out", "--garments", str(synth / "cloth"))
    assert code == 0, output
    test = tmp_path / "out" / "test"
    for name in people(synth):
        for folder, file in (("agnostic-mask", f"{name}_mask.png"), ("image-parse-v3", f"{name}.png"),
                             ("image", f"{name}.jpg"), ("cloth", f"{name}.jpg")):
            assert (test / folder / file).read_bytes() == (synth / folder / file).read_bytes(), f"{folder}/{file}"
        ours = np.asarray(Image.open(test / "cloth-mask" / f"{name}.jpg")) > 127
        theirs = np.asarray(Image.open(synth / "cloth-mask" / f"{name}.jpg")) > 127
        assert (ours & theirs).sum() / (ours | theirs).sum() > 0.75  # cut from the white background at 48x64
    data = load_vitonhd(tmp_path / "out", "test")
    assert [pair.person for pair in data.pairs] == [f"{name}.jpg" for name in people(synth)]
    assert data.check() == {}
    for pair in data.pairs:
        assert data.keypoints(pair.person).shape == (25, 3)
        assert Image.open(data.densepose(pair)).size == SIZE
        assert Image.open(data.sketch(pair)).size == SIZE
    settings = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert set(settings["parse_source"].values()) == {"parse"}


def write_lip(folder: Path, name: str = "p0") -> tuple[np.ndarray, np.ndarray]:
    """A photo coloured by the hand-made LIP parse map, the map and COCO-18 keypoints in `folder`/{images,parse,
    keypoints}."""
    parse, points = lip_person()
    colours = np.array([(250, 250, 250), (0, 0, 0), (40, 20, 10), (0, 0, 0), (0, 0, 0), (200, 30, 30), (0, 0, 0),
                        (0, 0, 0), (0, 0, 0), (30, 40, 160), (0, 0, 0), (0, 0, 0), (0, 0, 0), (230, 180, 150),
                        (120, 200, 90), (220, 200, 40), (210, 160, 130), (170, 120, 100), (20, 20, 20), (90, 90, 90)],
                       dtype=np.uint8)  # fmt: skip
    for sub in ("images", "parse", "keypoints"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(colours[parse]).save(folder / "images" / f"{name}.png")
    Image.fromarray(parse).save(folder / "parse" / f"{name}.png")
    coco = [value for y, x in np.nan_to_num(points) for value in (x, y, 0.0 if x == 0 else 0.9)]
    (folder / "keypoints" / f"{name}_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": coco}]}))
    return parse, points


def test_lip_parse_maps_and_coco18_keypoints(tmp_path):
    parse, points = write_lip(tmp_path)
    code, output = cli_outcome(["prepare-tryon", "--images", str(tmp_path / "images"), "--parse",
                                str(tmp_path / "parse"), "--keypoints", str(tmp_path / "keypoints"), "--out",
                                str(tmp_path / "out")])
    assert code == 0, output
    test = tmp_path / "out" / "test"
    mask = np.asarray(Image.open(test / "agnostic-mask" / "p0_mask.png")) > 127
    np.testing.assert_array_equal(mask, agnostic_mask(parse, points, LIP))
    written = Image.open(test / "image-parse-v3" / "p0.png")
    assert written.mode == "P" and (np.asarray(written) == parse).all()
    values = json.loads((test / "openpose_json" / "p0_keypoints.json").read_text())["people"][0]["pose_keypoints_2d"]
    assert values == body25_from_points(points)  # COCO-18 in, BODY_25 out
    agnostic = np.asarray(Image.open(test / "agnostic-v3.2" / "p0.jpg").convert("RGB"), dtype=np.int16)
    assert np.abs(agnostic[57, 48] - 128).max() < 8  # grey (up to JPEG noise) where masked


def test_drawn_masks_and_real_densepose(tmp_path):
    parse, points = write_lip(tmp_path)
    drawn = np.zeros(parse.shape, dtype=np.uint8)
    drawn[34:76, 28:68] = 255
    (tmp_path / "masks").mkdir()
    Image.fromarray(drawn).save(tmp_path / "masks" / "p0_mask.png")
    (tmp_path / "iuv").mkdir()
    Image.new("RGB", (96, 128), (24, 100, 200)).save(tmp_path / "iuv" / "p0.png")
    code, output = cli_outcome(["prepare-tryon", "--images", str(tmp_path / "images"), "--masks",
                                str(tmp_path / "masks"), "--densepose", str(tmp_path / "iuv"), "--keypoints",
                                str(tmp_path / "keypoints"), "--out", str(tmp_path / "out")])
    assert code == 0, output
    test = tmp_path / "out" / "test"
    mask = np.asarray(Image.open(test / "agnostic-mask" / "p0_mask.png")) > 127
    np.testing.assert_array_equal(mask, garment_mask_agnostic(drawn > 127, points))
    assert not (test / "image-parse-v3").exists()  # a drawn mask is no parse map
    densepose = np.asarray(Image.open(test / "image-densepose" / "p0.jpg"), dtype=np.int16)
    assert np.abs(densepose - (24, 100, 200)).max() < 8  # the given DensePose image, as a JPEG


class TinyParser:
    """A human parser small enough to export in a test: each pixel's logits are minus its colour's distance to each
    LIP label's colour (in the normalised BGR input), at a quarter of the input's size, as SCHP's are; three outputs
    (parsing, fusion, edge) like SCHP's exports."""

    @staticmethod
    def export(path: Path, colours: np.ndarray, size_hw: tuple[int, int] | None) -> None:
        torch = pytest.importorskip("torch")
        pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package (in the dev extra)")
        mean, std = np.array([0.406, 0.456, 0.485]), np.array([0.225, 0.224, 0.229])  # BGR order
        normalised = (colours[:, ::-1] / 255.0 - mean) / std

        class Model(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.register_buffer("prototypes", torch.tensor(normalised, dtype=torch.float32).view(1, -1, 3, 1, 1))

            def forward(self, x):
                pooled = torch.nn.functional.avg_pool2d(x, 4)
                logits = -((pooled[:, None] - self.prototypes) ** 2).sum(2)
                return logits * 0.5, logits, logits[:, :2]

        example = torch.zeros(1, 3, *(size_hw or (64, 64)))
        dynamic = None if size_hw else {"input": {2: "height", 3: "width"}}
        torch.onnx.export(Model().eval(), (example,), str(path), input_names=["input"],
                          output_names=["parsing", "fusion", "edge"], dynamic_axes=dynamic, dynamo=False)


LIP_COLOURS = np.array([(0, 0, 0), (255, 0, 255), (40, 20, 10), (0, 255, 255), (0, 128, 0), (200, 30, 30),
                        (128, 0, 128), (0, 0, 128), (128, 128, 0), (30, 40, 160), (0, 128, 128), (255, 128, 0),
                        (128, 255, 0), (230, 180, 150), (120, 200, 90), (220, 200, 40), (210, 160, 130),
                        (170, 120, 100), (60, 60, 200), (90, 90, 90)], dtype=np.float64)  # fmt: skip
# background black, as the borders the parser adds to fit the photo into its input


@pytest.mark.parametrize("size_hw", [(128, 128), None], ids=["fixed-input", "open-input"])
def test_onnx_parser(tmp_path, size_hw):
    pytest.importorskip("onnxruntime", reason="the --parser-model path needs onnxruntime (the parse extra)")
    parse, points = write_lip(tmp_path)
    Image.fromarray(LIP_COLOURS.astype(np.uint8)[parse]).save(tmp_path / "images" / "p0.png")
    TinyParser.export(tmp_path / "parser.onnx", LIP_COLOURS, size_hw)
    extra = ["--parser-size", "96x96"] if size_hw is None else []
    results = {}
    for channels in ("bgr", "rgb"):
        out = tmp_path / f"out-{channels}"
        code, output = cli_outcome(["prepare-tryon", "--images", str(tmp_path / "images"), "--parser-model",
                                    str(tmp_path / "parser.onnx"), "--parser-channels", channels, "--keypoints",
                                    str(tmp_path / "keypoints"), "--out", str(out), *extra])
        assert code == 0, output
        results[channels] = np.asarray(Image.open(out / "test" / "image-parse-v3" / "p0.png"))
    inner = ndimage.maximum_filter(parse, 9) == ndimage.minimum_filter(parse, 9)  # 4 px or more from a label edge
    assert (results["bgr"][inner] == parse[inner]).mean() > 0.97
    assert (results["rgb"][inner] == parse[inner]).mean() < 0.9  # the channel order matters
    mask = np.asarray(Image.open(tmp_path / "out-bgr" / "test" / "agnostic-mask" / "p0_mask.png")) > 127
    np.testing.assert_array_equal(mask, agnostic_mask(results["bgr"], points, LIP))


def test_resume_keeps_finished_people(synth, tmp_path):
    out = tmp_path / "out"
    assert prepare(synth, out)[0] == 0
    names = people(synth)
    first = out / "test" / "agnostic-mask" / f"{names[0]}_mask.png"
    second = out / "test" / "image-densepose" / f"{names[1]}.jpg"
    stamp = first.stat().st_mtime_ns
    second.unlink()  # as if the run had stopped there
    code, output = prepare(synth, out)
    assert code == 0 and f"prepared 1 people into {out / 'test'} ({len(names) - 1} existing kept)" in output
    assert second.is_file() and first.stat().st_mtime_ns == stamp
    code, output = prepare(synth, out, "--overwrite")
    assert code == 0 and f"prepared {len(names)} people" in output
    code, output = prepare(synth, out, "--densepose", str(synth / "image-densepose"))
    assert code == 2 and "was prepared with other options (densepose None ->" in output


def test_every_missing_input_in_one_error(synth, tmp_path):
    code, output = prepare(synth, tmp_path / "out", parse=False, keypoints=False)
    names = people(synth)
    assert code == 2
    errors = [line for line in output.splitlines() if ": error: " in line]
    assert len(errors) == 1
    assert f"no parse map for people {names[0]}, {names[1]}" in errors[0]
    assert f"pass --parse DIR with {names[0]}.png, --parser-model FILE.onnx, or --masks DIR" in errors[0]
    assert f"no keypoints for people {names[0]}" in errors[0] and "pass --keypoints DIR" in errors[0]
    assert not (tmp_path / "out").exists()  # refused before any work


def test_missing_garments_and_their_masks_are_named(synth, tmp_path):
    garments = tmp_path / "garments"
    garments.mkdir()
    names = people(synth)
    for name in names[1:]:
        (garments / f"{name}.jpg").write_bytes((synth / "cloth" / f"{name}.jpg").read_bytes())
    (tmp_path / "masks").mkdir()
    code, output = prepare(synth, tmp_path / "out", "--garments", str(garments), "--cloth-masks", str(tmp_path / "masks"))
    assert code == 2
    assert f"no garment for person {names[0]}: add {names[0]}.jpg to --garments" in output
    assert f"no garment mask for garments {names[1]}" in output


def test_pairs_file_and_unpaired_sketches(synth, tmp_path):
    names = people(synth)
    (tmp_path / "pairs.txt").write_text(f"{names[0]}.jpg {names[1]}.jpg\n{names[1]}.jpg {names[1]}.jpg\n")
    code, output = prepare(synth, tmp_path / "out", "--garments", str(synth / "cloth"), "--pairs",
                           str(tmp_path / "pairs.txt"))
    assert code == 0, output
    test = tmp_path / "out" / "test"
    assert (tmp_path / "out" / "test_pairs.txt").read_text() == (tmp_path / "pairs.txt").read_text()
    assert (test / "im_sketch_unpaired" / f"{names[0]}_{names[1]}.png").is_file()
    assert (test / "im_sketch" / f"{names[1]}.png").is_file()
    assert sorted(path.stem for path in (test / "cloth").iterdir()) == [names[1]]  # only the garments paired
