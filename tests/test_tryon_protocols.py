"""The dresscode and mgd protocols of `atelier evaluate` on layouts the tests write: per-category numbers against the
vitonhd protocol run on each category alone, every MGD metric against a hand computation, absent metrics with their
reason, and bad input as one UserError naming the file or flag."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.errors import UserError
from atelier.metrics import garment
from atelier.metrics.evaluate import evaluate
from atelier.metrics.garment_data import read_captions, read_garment_data, reference_keypoints
from atelier.metrics.mgd import evaluate_mgd
from atelier.metrics.tryon import evaluate_dresscode

pytestmark = pytest.mark.usefixtures("isolated_cache", "one_thread")  # 2 shared cores: one thread is faster
SIZE = (64, 48)


def picture(rng, height=64, width=48):
    y, x = np.mgrid[0:height, 0:width]
    base = 128 + 80 * np.sin(x / rng.uniform(3, 7))[..., None] * np.cos(y / rng.uniform(5, 9))[..., None]
    return np.clip(base + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)


def noisy(image, rng, amount=15):
    return np.clip(image.astype(float) + rng.normal(0, amount, image.shape), 0, 255).astype(np.uint8)


# --- dresscode ------------------------------------------------------------------------------------------------------
@pytest.fixture
def dresscode(tmp_path):
    """DressCode with 3 test persons in upper_body and 3 in lower_body (root pairs file with the category column; no
    garment images, which the protocol does not read), and LaDI-VTON-laid-out outputs GEN/<category>/X_0.png."""
    rng = np.random.default_rng(0)
    root, gen = tmp_path / "DressCode", tmp_path / "gen"
    lines = []
    for index, category in enumerate(("upper_body", "lower_body")):
        (root / category / "images").mkdir(parents=True)
        (gen / category).mkdir(parents=True)
        for person in range(3):
            name = f"{index}{person:05d}"
            truth = picture(rng)
            Image.fromarray(truth).save(root / category / "images" / f"{name}_0.jpg", quality=95)
            Image.fromarray(noisy(truth, rng)).save(gen / category / f"{name}_0.png")
            lines.append(f"{name}_0.jpg {name}_1.jpg {index}")
    (root / "test_pairs_paired.txt").write_text("\n".join(lines) + "\n")
    return root, gen


def test_dresscode_per_category_is_the_vitonhd_protocol_on_that_category_and_all_pools_them(dresscode, tmp_path):
    root, gen = dresscode
    options = {"size": SIZE, "allow_random_weights": True, "fid_method": "eigh", "workers": 1, "batch_size": 4}
    report = evaluate_dresscode(gen, root, per_image=True, **options)
    metrics = report["metrics"]
    assert report["categories"] == {"upper_body": {"generated": 3, "real": 3, "without_output": 0},
                                    "lower_body": {"generated": 3, "real": 3, "without_output": 0}}
    assert all(value is not None for value in metrics.values()), report["missing"]
    rows = report["per_image"]
    for category in ("upper_body", "lower_body"):
        mine = [row for row in rows if row["name"].startswith(f"{category}/")]
        assert len(mine) == 3
        for key in ("ssim", "lpips"):  # a category's figure is the mean over that category's images
            assert metrics[f"{key}/{category}"] == pytest.approx(np.mean([row[key] for row in mine]), rel=1e-9)
    # one category scored alone by the vitonhd protocol gives the same four numbers (one FID costs ~4 s here: one
    # category stands for both)
    alone = evaluate("vitonhd", gen / "lower_body", root / "lower_body" / "images", **options)["metrics"]
    for key in ("ssim", "lpips", "fid", "kid_x1000"):
        assert metrics[f"{key}/lower_body"] == pytest.approx(alone[key], rel=1e-6, abs=1e-9), key
    for key in ("ssim", "lpips"):
        assert metrics[key] == pytest.approx(np.mean([row[key] for row in rows]), rel=1e-9)
    pooled_gen, pooled_truth = tmp_path / "pooled_gen", tmp_path / "pooled_truth"
    for category in ("upper_body", "lower_body"):
        shutil.copytree(gen / category, pooled_gen, dirs_exist_ok=True)
        shutil.copytree(root / category / "images", pooled_truth, dirs_exist_ok=True)
    pooled = evaluate("vitonhd", pooled_gen, pooled_truth, **options)["metrics"]
    assert metrics["fid"] == pytest.approx(pooled["fid"], rel=1e-6)  # summed statistics = statistics of the union


def test_dresscode_cli_prints_one_row_per_category_and_checks_its_folders(dresscode, tmp_path, capsys):
    root, gen = dresscode
    out = tmp_path / "report.json"
    code = main(["evaluate", "--protocol", "dresscode", "--generated", str(gen), "--data", str(root), "--category",
                 "lower_body", "--setting", "unpaired", "--test-size", "64x48", "--device", "cpu", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["metrics"]) == {"fid", "kid_x1000", "fid/lower_body", "kid_x1000/lower_body"}
    assert "inception_fid" in report["missing"]["fid/lower_body"] or "pt_inception" in report["missing"]["fid"]
    printed = capsys.readouterr().out
    assert "| images | n | fid | kid_x1000 |" in printed and "| lower_body | 3 | missing | missing |" in printed
    with pytest.raises(UserError, match="dresses: category folder not found"):
        evaluate_dresscode(gen, root, categories=["dresses"])
    shutil.rmtree(root / "lower_body" / "images")
    with pytest.raises(UserError, match="lower_body/images: not a folder"):
        evaluate_dresscode(gen, root)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(gen / "upper_body" / "stranger_0.png")
    with pytest.raises(UserError, match=r"1 of 4 outputs in .*upper_body name no upper_body test person.*stranger_0"):
        evaluate_dresscode(gen, root, categories=["upper_body"])


# --- MGD metric arithmetic ------------------------------------------------------------------------------------------
def test_sketch_distance_is_zero_for_the_same_sketch_and_grows_with_a_shift():
    sketch = np.zeros((40, 30), bool)
    sketch[10:30, 8] = sketch[10:30, 20] = sketch[10, 8:21] = True  # a garment outline
    assert garment.sketch_distance(sketch, sketch) == 0
    shifted = [garment.sketch_distance(np.roll(sketch, shift, axis=1), sketch) for shift in (1, 2)]
    box = 20 * 13  # rows 10..29, columns 8..20
    # one column right: the left side leaves column 8 (20 pixels) for column 9, where only the top line's pixel was
    # (19 more); the right side leaves the box, emptying column 20 but for the top line, still there (19); the top
    # line stays on its pixels within the box
    assert shifted[0] == pytest.approx((20 + 19 + 19) / box)
    assert 0 < shifted[0] < shifted[1]
    assert garment.sketch_distance(sketch, np.zeros_like(sketch)) is None  # an empty input sketch has no box


def test_sketch_lines_follow_mgds_binarisation():
    gray = np.array([[0, 20, 234], [235, 240, 255]], np.uint8)  # MGD: invert, threshold 20 -> line from 235 up
    assert garment.sketch_lines(gray).tolist() == [[False, False, False], [True, True, True]]
    assert garment.edge_lines(np.array([0.9, 0.92, 1.0])).tolist() == [False, True, True]  # 229.5, 234.6 -> 235


def test_a_sketch_reads_the_same_lines_drawn_dark_on_white_or_bright_on_black(tmp_path):
    from PIL import Image

    from atelier.metrics import garment

    lines = np.zeros((512, 384), dtype=np.uint8)
    lines[100:104, 50:300] = 255
    Image.fromarray(lines).save(tmp_path / "bright.png")
    Image.fromarray(255 - lines).save(tmp_path / "dark.png")
    bright, dark = garment.read_sketch(tmp_path / "bright.png"), garment.read_sketch(tmp_path / "dark.png")
    assert bright.sum() == 4 * 250 and np.array_equal(bright, dark)


def test_keypoint_distance_averages_joints_present_in_both():
    found = np.array([[10.0, 10.0], [0.0, 0.0], [3.0, 4.0]])
    reference = np.array([[13.0, 14.0], [50.0, 50.0], [3.0, 4.0]])
    distance, joints = garment.keypoint_distance(found, np.array([True, False, True]), reference,
                                                 garment.drawn(reference))
    assert (distance, joints) == (pytest.approx(2.5), 2)  # (5 + 0) / 2; joint 1 was not found
    assert garment.keypoint_distance(found, np.zeros(3, bool), reference, np.ones(3, bool)) is None
    assert garment.drawn(np.array([[1.0, 5.0], [2.0, 2.0]])).tolist() == [False, True]  # MGD: x > 1 and y > 1
    assert garment.in_frame(np.array([[768.0, 1024.0]]), (768, 1024)).tolist() == [[384.0, 512.0]]
    assert garment.body25_to_coco(np.arange(25)).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, *range(9, 19)]


def test_openpose_body_net_and_its_peak_read_out():
    from atelier.metrics.nets.openpose import BodyKeypoints, OpenPoseBody, strongest_peaks

    maps = np.zeros((19, 20, 30), np.float32)
    y, x = np.mgrid[0:20, 0:30]
    maps[3] = np.exp(-((x - 7) ** 2 + (y - 5) ** 2) / 8)  # one joint at x 7, y 5
    maps[4] = 0.05  # below OpenPose's 0.1: not found
    joints = strongest_peaks(maps)
    assert joints[3].tolist() == [7, 5, pytest.approx(1.0)] and joints[4].tolist() == [0, 0, 0]
    torch.manual_seed(0)
    net = OpenPoseBody().eval()
    names = set(net.state_dict())
    assert {"conv1_1.weight", "conv4_4_CPM.bias", "conv5_5_CPM_L1.weight", "Mconv7_stage6_L2.bias"} <= names
    with torch.no_grad():
        fields, heatmaps = net(torch.zeros(1, 3, 32, 24))
    assert fields.shape == (1, 38, 4, 3) and heatmaps.shape == (1, 19, 4, 3)
    detector = BodyKeypoints(lambda prepared: net(prepared)[1].detach(), box_size=64)
    assert detector(np.zeros((40, 30, 3), np.uint8)).shape == (18, 3)


# --- MGD end to end on a VITON-HD multimodal layout ---------------------------------------------------------------
def write_tiny_clip(folder):
    """A random two-layer CLIP with atelier's offline tokenizer, saved as a transformers folder."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from atelier.diffusion.tokenizer import vocab_size, write_tokenizer_files

    write_tokenizer_files(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    torch.manual_seed(0)
    text = {"vocab_size": vocab_size(), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 32},
                                                                 "crop_size": {"height": 32, "width": 32}}))
    return folder


PEOPLE = ("00001_00", "00002_00", "00003_00")
CAPTIONS = {"00001": ["red dress", "long sleeves", "plain"], "00002": ["blue shirt", "striped", "short"],
            "00003": ["black top", "dotted", "cotton"], "00009": ["too", "few"]}


@pytest.fixture
def viton(tmp_path):
    """VITON-HD multimodal with 3 test persons: images, OpenPose BODY_25 JSON (768x1024 frame), captions.json and
    XDoG-drawn paired sketches of the persons; the outputs are the persons themselves."""
    rng = np.random.default_rng(1)
    root, gen = tmp_path / "VITON-HD", tmp_path / "outputs"
    for folder in ("image", "openpose_json", "im_sketch"):
        (root / "test" / folder).mkdir(parents=True)
    gen.mkdir()
    lines = []
    for index, stem in enumerate(PEOPLE):
        image = picture(rng, 128, 96)
        Image.fromarray(image).save(root / "test" / "image" / f"{stem}.jpg", quality=95)
        Image.fromarray(image).save(gen / f"{stem}.png")
        framed = garment.to_frame(Image.open(gen / f"{stem}.png").convert("RGB"))
        drawing = garment.xdog_lines([framed])[0]
        Image.fromarray(drawing.astype(np.uint8) * 255).save(root / "test" / "im_sketch" / f"{stem}.png")
        points = np.zeros((25, 3))
        points[:10] = np.column_stack([100 + 40 * np.arange(10), 200 + 50 * np.arange(10), np.ones(10)])
        points[3] = 0  # a joint OpenPose did not find
        people = {"people": [{"pose_keypoints_2d": points.ravel().tolist()}]}
        (root / "test" / "openpose_json" / f"{stem}_keypoints.json").write_text(json.dumps(people))
        lines.append(f"{stem}.jpg 0000{index + 4}_00.jpg")
    (root / "test_pairs.txt").write_text("\n".join(lines) + "\n")
    (root / "captions.json").write_text(json.dumps(CAPTIONS))
    return root, gen


def test_mgd_metrics_against_hand_computations(viton, tmp_path):
    root, gen = viton
    clip_dir = write_tiny_clip(tmp_path / "clip")
    keypoints = tmp_path / "keypoints"
    keypoints.mkdir()
    shifts = {"00001_00": 0.0, "00002_00": 3.0, "00003_00": 6.0}  # px in the 384x512 frame
    for stem, shift in shifts.items():  # the outputs' own keypoints, in their 96x128 pixels, shifted right
        points = np.array(json.loads((root / "test" / "openpose_json" / f"{stem}_keypoints.json").read_text())
                          ["people"][0]["pose_keypoints_2d"]).reshape(25, 3)
        points[:, 0] = points[:, 0] / 8 + shift / 4
        points[:, 1] = points[:, 1] / 8
        (keypoints / f"{stem}_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d":
                                                                                   points.ravel().tolist()}]}))
    report = evaluate_mgd(gen, root, clip=clip_dir, keypoints=keypoints, allow_random_weights=True, workers=1,
                          fid_method="eigh", batch_size=2, per_image=True, device="cpu")
    metrics, rows = report["metrics"], {row["name"]: row for row in report["per_image"]}
    assert metrics["sketch_distance_xdog"] == 0  # the outputs are the very images the input sketches were drawn from
    # joints 0-9 but 3 are present on both sides (8 = mid-hip is not a COCO joint): each is off by its output's shift
    for stem, shift in shifts.items():
        assert rows[f"{stem}.png"]["pose_distance_keypoints"] == pytest.approx(shift, abs=1e-4)
    assert metrics["pose_distance_keypoints"] == pytest.approx(3.0, abs=1e-4)
    scorer = garment.load_clip(clip_dir)
    for stem in PEOPLE:  # 100 x cosine of the embeddings of the output and of MGD's caption
        image = Image.open(gen / f"{stem}.png").convert("RGB")
        with torch.no_grad():
            pixels = torch.from_numpy(scorer.pixels(image))[None]
            image_embedding = scorer.model.get_image_features(pixel_values=pixels)
            ids = scorer.tokenizer([", ".join(CAPTIONS[stem[:5]])], return_tensors="pt")
            text_embedding = scorer.model.get_text_features(**ids)
        image_embedding = getattr(image_embedding, "pooler_output", image_embedding)
        text_embedding = getattr(text_embedding, "pooler_output", text_embedding)
        cosine = torch.nn.functional.cosine_similarity(image_embedding, text_embedding).item()
        assert rows[f"{stem}.png"]["clip_score"] == pytest.approx(100 * cosine, abs=1e-3)
    assert metrics["clip_score"] == pytest.approx(max(0.0, np.mean([r["clip_score"] for r in rows.values()])))
    assert metrics["fid"] is not None and metrics["kid_x1000"] is not None
    assert "--pose-model" in report["missing"]["pose_distance"]
    assert "--sketch-model" in report["missing"]["sketch_distance"]
    assert all(key in report["labels"] for key in metrics)
    assert report["labels"]["sketch_distance_xdog"].startswith("NOT MGD's")


def test_clip_pixels_follow_clip_image_processor(tmp_path):
    transformers = pytest.importorskip("transformers")
    scorer = garment.load_clip(write_tiny_clip(tmp_path / "clip"))
    image = Image.fromarray(picture(np.random.default_rng(3), 70, 45))
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    expected = processor(images=[image], return_tensors="np")["pixel_values"][0]
    assert np.abs(scorer.pixels(image) - expected).max() < 1e-4
    assert garment.clip_score([-5.0, 1.0]) == 0 and garment.clip_score([10.0, 20.0]) == 15  # torchmetrics: max(mean, 0)


def test_mgd_absent_metrics_say_why_and_bad_input_names_the_file(viton, tmp_path):
    root, gen = viton
    report = evaluate_mgd(gen, root, setting="unpaired", workers=1, device="cpu")  # no weights, models or sketches
    for key, fragment in (("clip_score", "--clip"), ("pose_distance", "--pose-model"), ("fid", "pt_inception"),
                          ("pose_distance_keypoints", "--keypoints"), ("sketch_distance_xdog", "im_sketch_unpaired")):
        assert report["metrics"][key] is None and fragment in report["missing"][key], (key, report["missing"])
    broken = tmp_path / "body.pth"
    torch.save({"conv1_1.weight": torch.zeros(1)}, broken)
    with pytest.raises(UserError, match="body.pth lacks"):
        evaluate_mgd(gen, root, pose_model=broken, workers=1, device="cpu")
    captions = dict(CAPTIONS)
    del captions["00002"]
    (root / "captions.json").write_text(json.dumps(captions))
    with pytest.raises(UserError, match=r"captions.json: no caption for 1 output: 00002_00.png \(garment 00002\)"):
        evaluate_mgd(gen, root, clip=tmp_path / "anything", workers=1, device="cpu")
    (root / "test" / "im_sketch" / "00003_00.png").unlink()
    with pytest.raises(UserError, match="00003_00.png: input sketch not found"):
        evaluate_mgd(gen, root, workers=1, device="cpu")


def test_mgd_reads_dresscode_captions_and_sketches_as_its_loader(tmp_path):
    root = tmp_path / "DressCode"
    (root / "dresses" / "images").mkdir(parents=True)
    (root / "dresses" / "test_pairs_unpaired.txt").write_text("052012_0.jpg 052033_1.jpg\n051994_0.jpg 051990_1.jpg\n")
    (root / "fine_captions.json").write_text(json.dumps({"052033": ["red", "long", "silk"], "051990": ["short", "a"]}))
    (root / "coarse_captions.json").write_text(json.dumps({"051990": ["dress"]}))
    data = read_garment_data(root, "unpaired")
    assert data.kind == "dresscode" and data.categories == ("dresses",)
    first = data.samples[0]
    assert first.sketch == root / "dresses" / "im_sketch_unpaired" / "052012_0_052033_1.png"
    assert first.keypoints == root / "dresses" / "keypoints" / "052012_2.json" and first.frame == garment.FRAME
    captions, source = read_captions(data, None)
    assert captions == {"052033": "red, long, silk", "051990": "dress"}  # fine with >= 3 phrases, then coarse
    assert "coarse" in source
    with pytest.raises(UserError, match="--category upper_body"):
        read_garment_data(root, "unpaired", ["upper_body"])


def test_mgd_through_the_cli_without_weights(viton, tmp_path, capsys):
    root, gen = viton
    out = tmp_path / "mgd.json"
    assert main(["evaluate", "--protocol", "mgd", "--generated", str(gen), "--data", str(root), "--device", "cpu",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["metrics"]["sketch_distance_xdog"] == 0 and report["metrics"]["fid"] is None
    assert report["dataset"] == {"kind": "vitonhd", "categories": ["upper_body"]}
    printed = capsys.readouterr().out
    assert "| sketch_distance_xdog | 0.0000 | NOT MGD's SD" in printed and "`clip_score`" in printed


def onnx_model(path, nodes, inputs, outputs, initializers=()):
    """Save a tiny ONNX graph (opset 13) built with onnx.helper."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(array, name) for name, array in initializers])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_mgd_runs_onnx_pose_and_sketch_models_and_says_when_onnxruntime_is_missing(viton, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from onnx import helper

    from atelier.metrics.nets.openpose import BodyKeypoints

    root, gen = viton
    rng = np.random.default_rng(5)
    heat, fields = rng.normal(0, 1, (19, 3, 1, 1)).astype(np.float32), rng.normal(0, 1, (38, 3, 1, 1)).astype(np.float32)
    pose = onnx_model(tmp_path / "body.onnx", [  # stand-in body model: 8x8 average pooling, then 1x1 convolutions
        helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Conv", ["pooled", "paf_w"], ["pafs"]), helper.make_node("Conv", ["pooled", "heat_w"], ["heat"])],
        ["image"], ["pafs", "heat"], [("paf_w", fields), ("heat_w", heat)])
    edges = onnx_model(tmp_path / "pidinet.onnx", [helper.make_node("ReduceMean", ["image"], ["edges"], axes=[1])],
                       ["image"], ["edges"])  # stand-in edge model: the grey level
    report = evaluate_mgd(gen, root, pose_model=pose, sketch_model=edges, workers=1, device="cpu", per_image=True)
    rows = {row["name"]: row for row in report["per_image"]}
    same = BodyKeypoints(lambda x: torch.nn.functional.conv2d(torch.nn.functional.avg_pool2d(x, 8), torch.from_numpy(heat)))
    samples = {Path(sample.person).stem: sample for sample in read_garment_data(root, "paired").samples}
    for stem in PEOPLE:  # the torch twin of the ONNX graph, read out and measured by hand
        image = Image.open(gen / f"{stem}.png").convert("RGB")
        found = same(np.asarray(image))
        expected, joints = garment.keypoint_distance(garment.in_frame(found, image.size), found[:, 2] > 0,
                                                     *reference_keypoints(samples[stem]))
        assert joints > 0 and rows[f"{stem}.png"]["pose_distance"] == pytest.approx(expected, abs=1e-3)
        grey = np.asarray(garment.to_frame(image), np.float32).mean(axis=2) / 255.0
        sketch = garment.read_sketch(root / "test" / "im_sketch" / f"{stem}.png")
        assert rows[f"{stem}.png"]["sketch_distance"] == pytest.approx(
            garment.sketch_distance(garment.edge_lines(grey), sketch), abs=1e-3)
    assert report["weights"]["pose_model"].startswith("body.onnx") and "sketch_model" in report["weights"]
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # as on a machine without it
    report = evaluate_mgd(gen, root, pose_model=pose, sketch_model=edges, workers=1, device="cpu")
    for key in ("pose_distance", "sketch_distance"):
        assert report["metrics"][key] is None and "onnxruntime is not installed" in report["missing"][key]
