"""The mcld evaluation protocol: cfld's metrics plus MCLD's face-identity score (face_cos, face_dist, face_pairs) with a
tiny exported ONNX "ArcFace", landmarks from the target pose's keypoints; absent with the reason without a model."""

import json

import numpy as np
import pytest
from PIL import Image

from atelier.cli import main
from atelier.errors import UserError
from atelier.metrics.evaluate import evaluate
from atelier.metrics.report import markdown_table
from tests.helpers import write_scrfd_stand_in
from tests.test_mcld_conditions import TinyArcFace

pytestmark = pytest.mark.usefixtures("isolated_cache", "one_thread")
CFLD_KEYS = ("ssim", "ssim_256", "psnr", "lpips", "fid", "fid_pytorch_fid")


def face_pose(eyes: bool = True) -> tuple[list[int], list[int]]:
    """18 COCO keypoints (y, x lists, -1 missing) in the 256x176 frame: a frontal face near the top, eyes optional."""
    ys, xs = [-1] * 18, [-1] * 18
    ys[0], xs[0] = 60, 88  # nose
    if eyes:
        ys[14], xs[14], ys[15], xs[15] = 48, 80, 48, 96
    return ys, xs


@pytest.fixture
def folders(tmp_path):
    """3 ground-truth PNGs at the test size 256x176 and their outputs: pair 0 identical, pair 1 a different picture,
    pair 2 identical but its target pose has no eyes (no face); the annotation CSV of the ground truth."""
    rng = np.random.default_rng(0)
    gt, gen = tmp_path / "test_highres", tmp_path / "generated"
    gt.mkdir()
    gen.mkdir()
    rows, lines = ["from,to"], ["name:keypoints_y:keypoints_x"]
    y, x = np.mgrid[0:256, 0:176]
    for i in range(3):
        picture = 128 + 90 * np.sin(x / (4 + i))[..., None] * np.cos(y / 9)[..., None] + rng.normal(0, 8, (256, 176, 3))
        picture = np.clip(picture, 0, 255).astype(np.uint8)
        Image.fromarray(picture).save(gt / f"person{i}_back.png")
        output = picture if i != 1 else np.ascontiguousarray(picture[:, ::-1])
        Image.fromarray(output).save(gen / f"person{i}_front_2_person{i}_back_vis.png")
        rows.append(f"person{i}_front.png,person{i}_back.png")
        ys, xs = face_pose(eyes=i != 2)
        lines.append(f"person{i}_back.png: {json.dumps(ys)}: {json.dumps(xs)}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "annotation.csv").write_text("\n".join(lines) + "\n")
    return gt, gen, tmp_path / "pairs.csv", tmp_path / "annotation.csv"


@pytest.fixture
def face_model(tmp_path):
    pytest.importorskip("onnxruntime", reason="the face model runs with onnxruntime (the mcld extra)")
    pytest.importorskip("cv2", reason="the face warp uses OpenCV (the mcld extra)")
    TinyArcFace.export(tmp_path / "arcface.onnx")
    return tmp_path / "arcface.onnx"


def expected_face(model_path, generated: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The face score of one pair computed directly: both images aligned by the same target-pose landmarks."""
    from atelier.data.face_id import ArcFace, align_face, landmarks_from_keypoints

    model = ArcFace(model_path)
    ys, xs = face_pose()
    points = np.where(np.array([ys, xs], float).T < 0, np.nan, np.array([ys, xs], float).T)
    landmarks = landmarks_from_keypoints(points)
    a, b = (model(align_face(image, landmarks)).astype(np.float64) for image in (generated, truth))
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), float(np.linalg.norm(a - b))


def test_face_keys_with_a_model_and_the_cfld_keys_unchanged(folders, face_model):
    gt, gen, pairs, annotation = folders
    report = evaluate("mcld", gen, gt, pairs=pairs, face_model=face_model, face_keypoints=annotation, per_image=True,
                      workers=1, device="cpu")
    cfld = evaluate("cfld", gen, gt, pairs=pairs, workers=1, device="cpu")
    metrics = report["metrics"]
    assert list(metrics) == [*CFLD_KEYS, "face_cos", "face_dist", "face_pairs"]
    for key in CFLD_KEYS:  # the same metrics as cfld's on the same files (missing ones missing for the same reason)
        assert metrics[key] == cfld["metrics"][key]
        reason = cfld["missing"].get(key)
        assert report["missing"].get(key) == (reason.replace("cfld", "mcld") if reason else None)
    truth = np.asarray(Image.open(gt / "person1_back.png"))
    cos1, dist1 = expected_face(face_model, truth[:, ::-1], truth)
    assert cos1 < 0.999 and dist1 > 0  # the flipped picture is another face
    assert metrics["ssim"] is not None and metrics["psnr"] is not None
    assert metrics["face_pairs"] == 2  # pair 2's target pose has no eyes: no face in either image
    assert metrics["face_cos"] == pytest.approx((1.0 + cos1) / 2, abs=1e-6)
    assert metrics["face_dist"] == pytest.approx((0.0 + dist1) / 2, abs=1e-4)
    rows = {row["name"].split("_")[0]: row for row in report["per_image"]}
    assert rows["person0"]["face_cos"] == pytest.approx(1.0, abs=1e-6) and rows["person0"]["face_dist"] == 0.0
    assert rows["person1"]["face_cos"] == pytest.approx(cos1, abs=1e-6)
    assert rows["person2"]["face_cos"] is None and rows["person2"]["face_dist"] is None
    assert report["weights"]["face_model"] == str(face_model)
    assert "face_cos" not in report["missing"] and "cosine similarity" in report["labels"]["face_cos"]


def test_without_a_face_model_the_face_keys_are_missing_with_one_reason(folders):
    gt, gen, pairs, _ = folders
    report = evaluate("mcld", gen, gt, pairs=pairs, workers=1, device="cpu", per_image=True)
    for key in ("face_cos", "face_dist", "face_pairs"):
        assert report["metrics"][key] is None and "--face-model" in report["missing"][key]
    assert all("face_cos" not in row for row in report["per_image"])
    lines = [line for line in markdown_table(report).splitlines() if line.startswith("- ") and "face_cos" in line]
    assert len(lines) == 1 and "face_dist" in lines[0] and "face_pairs" in lines[0] and "--face-model" in lines[0]


def test_face_flags_are_checked(folders, face_model, tmp_path, capsys):
    gt, gen, pairs, annotation = folders
    with pytest.raises(UserError, match=r"--face-model: only the mcld protocol's paired setting has the face score"):
        evaluate("cfld", gen, gt, pairs=pairs, face_model=face_model)
    with pytest.raises(UserError, match=r"--face-keypoints: the face score needs --face-model"):
        evaluate("mcld", gen, gt, pairs=pairs, face_keypoints=annotation)
    out = tmp_path / "report.json"
    code = main(["evaluate", "--protocol", "mcld", "--generated", str(gen), "--ground-truth", str(gt), "--pairs",
                 str(pairs), "--face-model", str(face_model), "--face-keypoints", str(annotation), "--device", "cpu",
                 "--workers", "1", "--out", str(out)])
    assert code == 0 and json.loads(out.read_text())["metrics"]["face_pairs"] == 2
    assert "| face_cos |" in capsys.readouterr().out


def test_with_a_detector_each_image_gives_its_own_face(folders, face_model, tmp_path):
    """A stand-in SCRFD (64x64 input, constant outputs: one face at stride 16) finds a face in every image, so the pair
    whose target pose has no eyes counts too: landmarks come from the detector, not from the keypoints."""
    gt, gen, pairs, annotation = folders
    face = (1 * 4 + 2) * 2 + 1  # stride 16, cell (row 1, col 2), anchor 1: centre (x 32, y 16)
    write_scrfd_stand_in(tmp_path / "scrfd.onnx", {(16, face): (0.9, 1.0, [-0.5, -0.3, 0.5, -0.3, 0.0, 0.0, -0.4, 0.4, 0.4, 0.4])})
    report = evaluate("mcld", gen, gt, pairs=pairs, face_model=face_model, face_detector=tmp_path / "scrfd.onnx",
                      per_image=True, workers=1, device="cpu")
    assert report["metrics"]["face_pairs"] == 3
    rows = {row["name"].split("_")[0]: row for row in report["per_image"]}
    assert rows["person0"]["face_cos"] == pytest.approx(1.0, abs=1e-6) and rows["person0"]["face_dist"] == 0.0
    assert rows["person2"]["face_cos"] == pytest.approx(1.0, abs=1e-6)
