"""End to end: `atelier evaluate` on a tiny folder set, with random weights, without weights, and through the CLI."""

import json

import numpy as np
import pytest
from PIL import Image

from atelier.cli import main
from atelier.errors import UserError
from atelier.metrics.evaluate import STAMP_RANDOM, evaluate

SIZE = "64x56"


pytestmark = pytest.mark.usefixtures("isolated_cache", "one_thread")  # 2 shared cores: OpenMP spinning makes 2 threads slower


@pytest.fixture
def folders(tmp_path):
    """6 ground-truth targets (larger than the test size), PIDM-named outputs, 4 training images, a pairs CSV."""
    rng = np.random.default_rng(0)
    gt, gen, train = tmp_path / "test_highres", tmp_path / "generated", tmp_path / "train_highres"
    for folder in (gt, gen, train):
        folder.mkdir()
    rows = ["from,to"]
    y, x = np.mgrid[0:110, 0:75]
    for i in range(6):
        picture = 128 + 90 * np.sin(x / (4 + i))[..., None] * np.cos(y / 9)[..., None] + rng.normal(0, 8, (110, 75, 3))
        picture = np.clip(picture, 0, 255).astype(np.uint8)
        Image.fromarray(picture).save(gt / f"person{i}_back.jpg", quality=95)
        output = Image.fromarray(picture).resize((56, 64), Image.Resampling.BICUBIC)
        noisy = np.clip(np.asarray(output, dtype=float) + rng.normal(0, 12, (64, 56, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(gen / f"person{i}_front_2_person{i}_back_vis.png")
        rows.append(f"person{i}_front.jpg,person{i}_back.jpg")
    for i in range(4):
        Image.fromarray((rng.random((90, 60, 3)) * 255).astype(np.uint8)).save(train / f"t{i}.jpg")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return gt, gen, train, tmp_path / "pairs.csv"


def test_cfld_with_random_weights_reports_every_metric_and_the_stamp_and_caches_real_stats(folders):
    gt, gen, train, pairs = folders
    report = evaluate("cfld", gen, gt, train, pairs, size=SIZE, allow_random_weights=True, fid_method="eigh",
                      batch_size=4, workers=2)
    assert report["stamp"] == STAMP_RANDOM
    assert set(report["metrics"]) == {"ssim", "ssim_256", "psnr", "lpips", "fid", "fid_pytorch_fid"}
    assert all(isinstance(v, float) for v in report["metrics"].values()), report["missing"]
    assert 0 < report["metrics"]["ssim"] < 1 and report["metrics"]["psnr"] > 10 and report["metrics"]["lpips"] > 0
    assert report["counts"] == {"generated": 6, "scored": 6, "real": 4, "pairs_without_output": 0}
    assert report["weights"]["inception_torchvision"] == "RANDOM (seed 0)"
    assert all(v.startswith("computed and cached") for v in report["real_statistics"].values())
    assert "per_image" not in report  # only when asked
    again = evaluate("cfld", gen, gt, train, pairs, size=SIZE, allow_random_weights=True, fid_method="eigh",
                     batch_size=3, workers=1, per_image=True)
    assert all(v.startswith("cached") for v in again["real_statistics"].values())
    names = [row["name"] for row in again["per_image"]]
    assert len(names) == 6 and names == sorted(names)  # one row per generated file, in name order for pairing
    for key in ("ssim", "ssim_256", "psnr", "lpips"):  # the per-image scores behind each mean
        assert np.mean([row[key] for row in again["per_image"]]) == pytest.approx(report["metrics"][key], rel=1e-6)
    for key in ("ssim", "ssim_256", "psnr", "fid", "fid_pytorch_fid"):
        assert again["metrics"][key] == pytest.approx(report["metrics"][key], rel=1e-6, abs=1e-9)


def test_without_weights_lpips_and_fid_are_missing_with_the_reason(folders):
    gt, gen, train, pairs = folders
    report = evaluate("cfld", gen, gt, train, pairs, size=SIZE)
    assert report["stamp"] is None
    assert report["metrics"]["ssim"] is not None and report["metrics"]["psnr"] is not None
    assert report["metrics"]["lpips"] is None and report["metrics"]["fid"] is None
    assert "alexnet-owt-7be5be79.pth" in report["missing"]["lpips"]
    assert "inception_v3_google-0cc3c7bd.pth" in report["missing"]["fid"]
    assert "https://" in report["missing"]["fid_pytorch_fid"]
    no_real = evaluate("cfld", gen, gt, size=SIZE)
    assert no_real["metrics"]["fid"] is None and "pass --real DIR" in no_real["missing"]["fid"]


def test_cli_writes_json_and_prints_a_markdown_table(folders, tmp_path, capsys):
    gt, gen, train, pairs = folders
    out = tmp_path / "report.json"
    code = main(["evaluate", "--protocol", "standard", "--generated", str(gen), "--ground-truth", str(gt),
                 "--pairs", str(pairs), "--test-size", SIZE, "--out", str(out), "--device", "cpu"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == "standard" and report["metrics"]["kid_x1000"] is None
    printed = capsys.readouterr().out
    assert "| ssim |" in printed and "| lpips_vgg | missing |" in printed and str(out) in printed


def test_user_errors_name_the_flag(folders, tmp_path, capsys):
    gt, gen, train, pairs = folders
    with pytest.raises(UserError, match="--ground-truth is required"):
        evaluate("standard", gen, None)
    with pytest.raises(UserError, match="--setting unpaired"):
        evaluate("cfld", gen, gt, setting="unpaired")
    unpaired = evaluate("vitonhd", gen, None, real=gt, setting="unpaired")
    assert set(unpaired["metrics"]) == {"fid", "kid_x1000"}
    code = main(["evaluate", "--protocol", "cfld", "--generated", str(gen), "--ground-truth", str(train),
                 "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "6 of 6 generated images match no ground-truth image" in err and err.count("\n") == 1
