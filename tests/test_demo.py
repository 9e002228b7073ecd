"""`atelier demo --fast`: every stage runs end to end (tiny data, a few steps) and the report holds each stage's tables,
checks with margins, pictures and config; the full demo's settings stay what its numbers were made with."""

import json
from pathlib import Path

import pytest

from tests.helpers import run_command

pytestmark = pytest.mark.usefixtures("isolated_cache", "one_thread")

STAGES = ("base", "style", "pose", "illustrate")


def test_fast_demo_reports_every_stage(tmp_path):
    from atelier.commands import demo
    from atelier.demo.style import TRANSLATE

    out = tmp_path / "demo"
    assert run_command(demo, ["--out", str(out), "--fast"]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    numbers = json.loads((out / "report.json").read_text())
    assert list(numbers) == list(STAGES)
    for task, result in numbers.items():
        assert f"<section id='{task}'>" in page and (out / "configs" / f"{task}.yaml").is_file(), task
        assert result["tables"] and all(table["rows"] for table in result["tables"]), task
        for table in result["tables"]:
            assert f"<caption>{table['caption']}</caption>" in page.replace("&#x27;", "'"), table["caption"]
        assert result["checks"] and set(result["margins"]) == set(result["checks"]), task
        assert all(result["margins"].values()), task
    claims = [claim for result in numbers.values() for claim in result["checks"]]
    assert page.count("PASS: ") + page.count("FAIL: ") == len(claims)
    for image in ("base/heldout_grid.png", "style/translations.png", "pose/test_grid.png", "illustrate/comparison.png"):
        assert f"<img src='{image}'>" in page and (out / image).is_file(), image
    rows = [row["images"] for row in numbers["illustrate"]["tables"][0]["rows"]]
    assert f"style LoRA translation (SDEdit {TRANSLATE['strength']}, prompt)" in rows  # the label is the strength run


def test_full_demo_settings_are_unchanged(tmp_path):
    """What --fast shrinks keeps its full value without it (the full demo's numbers were made with these)."""
    from atelier.demo.base import base_configs
    from atelier.demo.context import DEMO_DATA, DemoContext
    from atelier.demo.illustrate import dual_lora_config
    from atelier.demo.pose import pose_config
    from atelier.demo.style import style_configs

    ctx = DemoContext(out=tmp_path)
    vae, unet = base_configs(ctx, Path("data"), Path("vae-data"))
    lora, adapter = style_configs(ctx, Path("data"), Path("base"))
    pose, dual = pose_config(ctx, Path("base")), dual_lora_config(ctx, Path("data"), Path("base"), Path("lora"))
    steps = [(cfg.train.max_steps, cfg.train.batch_size) for cfg in (vae, unet, lora, adapter, pose, dual)]
    assert steps == [(2000, 4), (700, 16), (200, 16), (100, 16), (300, 8), (200, 8)]
    assert (lora.sample.steps, dual.sample.count, dual.sample.steps) == (20, 4, 50)
    assert DEMO_DATA == {"identities": 48, "poses_per_identity": 4, "size": (176, 256), "seed": 0, "test_fraction": 0.2}
