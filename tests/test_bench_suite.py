"""The speed suite's code path at its smallest setting (`--quick`: 2 steps, batch 1, one repeat): structure, not speed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def suite(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # bench/ lives beside src/, not in the installed package
    import bench.suite

    return bench.suite


def test_quick_suite_writes_one_table_with_finite_ratios(suite, tmp_path, capsys):
    code = suite.main(["--quick", "--only", "t2i", "translate", "pose", "train", "eval", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "suite-tiny-quick.json").read_text())
    assert data["size"] == "tiny" and data["settings"]["quick"] is True
    assert {"torch", "diffusers", "transformers"} <= set(data["versions"])
    assert data["machine"]["matmul_peak"]["flop_per_s"] > 0
    names = [row["name"] for row in data["rows"]]
    assert [n.split()[0] for n in names] == ["text-to-image", "translate", "pose", "LoRA", "evaluation"]
    for row in data["rows"]:
        assert row["ours"] > 0 and row["reference"] > 0, row["name"]
        assert math.isfinite(row["speedup"]) and row["speedup"] > 0, row["name"]
        if row["name"].startswith("evaluation"):
            assert row["bound"] is None  # SSIM is not matrix work
        else:
            assert row["flops"] > 0 and math.isfinite(row["ours_over_bound"]), row["name"]
    markdown = (tmp_path / "suite-tiny-quick.md").read_text()
    printed = capsys.readouterr().out
    for text in (markdown, printed):
        assert "| benchmark | ours | reference | speed-up |" in text
        assert all(name in text for name in names)


def test_translate_flops_count_only_the_steps_that_run(suite):
    """Translate's compute bound counts int(steps x strength) UNet calls on top of the fixed encode/decode work."""
    import torch

    from atelier.diffusion.img2img import translate
    from bench._flops import count_flops, split_per_call
    from bench._sizes import build_components, suite_size

    components = build_components(suite_size("tiny", quick=True))
    images = torch.zeros(1, 3, 32, 32)
    fixed, per_call = split_per_call(lambda n: translate(components, images, ["a"], strength=1.0, steps=n,
                                                         show_progress=False))
    assert fixed > 0 and per_call > 0
    counted = count_flops(lambda: translate(components, images, ["a"], strength=0.5, steps=4, show_progress=False))
    assert counted == fixed + 2 * per_call


def test_sd15_without_cuda_is_skipped_with_a_message(suite, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert suite.main(["--size", "sd15", "--out", str(tmp_path)]) == 0
    assert "needs a CUDA GPU" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
