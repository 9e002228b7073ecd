"""`atelier demo --fast`: every stage runs end to end (tiny data, a few steps) and the report holds each stage's tables,
checks decided by paired tests (interval and p-value beside each verdict), pictures and config; a failing stage says so
in its first line; the full demo's settings stay what its numbers were made with."""

import html
import json
import re
from pathlib import Path

import pytest

from tests.helpers import run_command

pytestmark = pytest.mark.usefixtures("isolated_cache", "one_thread")

STAGES = ("base", "style", "pose", "mcld", "illustrate", "retrieval")


def test_fast_demo_reports_every_stage(tmp_path):
    from atelier.commands import demo
    from atelier.demo.style import TRANSLATE

    out = tmp_path / "demo"
    assert run_command(demo, ["--out", str(out), "--fast"]) == 0
    page = (out / "report.html").read_text(encoding="utf-8").replace("&#x27;", "'")
    numbers = json.loads((out / "report.json").read_text())
    assert list(numbers) == list(STAGES)
    for task, result in numbers.items():
        assert f"<section id='{task}'>" in page and (out / "configs" / f"{task}.yaml").is_file(), task
        assert result["tables"] and all(table["rows"] for table in result["tables"]), task
        for table in result["tables"]:
            assert f"<caption>{table['caption']}</caption>" in page, table["caption"]
        assert result["checks"] and set(result["margins"]) == set(result["checks"]), task
        assert all(result["margins"].values()), task
        for claim, test in result["tests"].items():  # the paired test's numbers behind every verdict (or its parts')
            for leaf in test.get("parts", {claim: test}).values():
                assert {"n", "mean_difference", "interval", "p_value", "passed"} <= set(leaf) and leaf["n"] >= 2, claim
            assert test["passed"] == result["checks"][claim], claim
        assert f"<p class='verdict {'ok' if all(result['checks'].values()) else 'bad'}'>{result['verdict']}</p>" in page
        assert result["verdict"].startswith("PASSED" if all(result["checks"].values()) else "FAILED"), task
    lines = sum(1 + len(test.get("parts", {})) for result in numbers.values() for test in result["tests"].values())
    assert page.count("PASS: ") + page.count("FAIL: ") == lines  # a verdict per check and per part of a combined one
    verdicts = re.findall(r"<li class='(?:ok|bad)'>(?:PASS|FAIL): ([^<]*?)(?: <span class='margin'>\(margin: ([^<]*)\)</span>)?(<ul|</li>)",
                          page)
    assert len(verdicts) == lines
    for claim, margin, end in verdicts:  # every single test shows its interval and sign test beside the verdict
        assert end == "<ul" or ("95% CI" in margin and " p=" in margin), claim
    for image in ("base/heldout_grid.png", "style/translations.png", "pose/test_grid.png", "mcld/test_grid.png",
                  "mcld/edit_grid.png", "illustrate/comparison.png", "retrieval/composed_grid.png"):
        assert f"<img src='{image}'>" in page and (out / image).is_file(), image
    rows = [row["images"] for row in numbers["illustrate"]["tables"][0]["rows"]]
    assert f"style LoRA translation (SDEdit {TRANSLATE['strength']}, prompt)" in rows  # the label is the strength run


def test_a_failing_stage_says_so_first_in_its_section_and_atop_the_report(tmp_path):
    import numpy as np

    from atelier.demo.report import write_report
    from atelier.demo.results import RULE, StageResult, Table, all_of, paired_beats

    theirs = np.random.default_rng(0).normal(20.0, 1.0, 100)
    good, bad = paired_beats("ours higher", theirs + 1, theirs), paired_beats("ours no higher", theirs, theirs + 0.01)
    results = [StageResult("fine", "Fine stage", "all good", tables=[Table("t", [{"a": 1.0}])], checks=[good]),
               StageResult("broken", "Broken stage", "summary", tables=[Table("t", [{"a": 1.0}])],
                           checks=[good, bad, all_of("both", [good, bad])])]
    page = write_report(results, tmp_path, "header").read_text(encoding="utf-8").replace("&#x27;", "'")
    first = "FAILED 2 of 3 checks: ours no higher; both."
    assert "<h2>Broken stage</h2><p class='verdict bad'>" + first + "</p><p>summary</p>" in page
    assert "<h2>Fine stage</h2><p class='verdict ok'>PASSED all 1 checks.</p>" in page
    top = page[: page.index("<section")]
    assert html.escape(RULE).replace("&#x27;", "'") in top and f"Broken stage</a>: <span class='verdict bad'>{first}</span>" in top
    assert "FAIL: ours no higher <span class='margin'>(margin: -0.0100 [-0.0100, -0.0100] 95% CI, sign test 0/100 p=" in page
    numbers = json.loads((tmp_path / "report.json").read_text())["broken"]
    assert numbers["verdict"] == first and numbers["checks"] == {"ours higher": True, "ours no higher": False, "both": False}
    assert np.allclose(numbers["tests"]["ours no higher"]["interval"], -0.01)
    assert numbers["tests"]["both"]["parts"]["ours higher"]["n"] == 100


def test_full_demo_settings_are_unchanged(tmp_path):
    """What --fast shrinks keeps its full value without it (the full demo's numbers were made with these)."""
    from atelier.demo.base_model import base_configs
    from atelier.demo.context import DEMO_DATA, DemoContext
    from atelier.demo.illustrate import dual_lora_config
    from atelier.demo.mcld import mcld_config
    from atelier.demo.pose import pose_config
    from atelier.demo.style import style_config

    ctx = DemoContext(out=tmp_path)
    vae, unet = base_configs(ctx, Path("data"), Path("vae-data"))
    lora = style_config(ctx, Path("data"), Path("base"))
    pose, dual = pose_config(ctx, Path("base")), dual_lora_config(ctx, Path("data"), Path("base"), Path("lora"))
    mcld = mcld_config(ctx, Path("base"))
    steps = [(cfg.train.max_steps, cfg.train.batch_size) for cfg in (vae, unet, lora, pose, mcld, dual)]
    assert steps == [(2000, 4), (700, 16), (40, 16), (150, 8), (150, 8), (70, 8)]
    assert (lora.sample.steps, pose.sample.steps, mcld.sample.steps, dual.sample.count, dual.sample.steps) == (20, 6, 6, 4, 20)
    assert DEMO_DATA == {"identities": 48, "poses_per_identity": 4, "size": (176, 256), "seed": 0, "test_fraction": 0.2}
    from atelier.demo import retrieval

    pretrain, composed = retrieval.retrieval_configs(ctx, Path("data"), Path("pretrain"))
    assert [(cfg.train.max_steps, cfg.train.batch_size) for cfg in (pretrain, composed)] == [(600, 16), (300, 16)]
    assert retrieval.DATA == {"identities": 640, "size": (64, 64), "seed": 5, "test_fraction": 0.5}


def test_missed_base_targets_are_named_with_their_numbers_and_why():
    import numpy as np

    from atelier.demo.base import SHORTFALL, missed_targets

    met = {"photo_vae": np.full(4, 29.0), "caption_hit": np.ones(4), "blind_hit": np.zeros(4), "shuffled_hit": np.zeros(4),
           "caption_type": np.full(4, 0.2)}  # type rates are sums of class-balanced contributions: 0.8
    assert missed_targets(met) == []
    note = missed_targets({**met, "photo_vae": np.full(4, 27.91), "blind_hit": np.array([0, 0, 1, 0.0])})
    assert len(note) == 1 and note[0].endswith(SHORTFALL)
    assert "photos, dB PSNR 27.91 (goal >= 28)" in note[0] and "caption-blind colour hit rate 0.25 (goal <= 0.2)" in note[0]
    assert "caption colour hit rate" not in note[0].replace("caption-blind colour hit rate", "")


def _build_once(folder: str, log: str) -> str:
    """A cached product whose build takes a while and notes each build in `log` (run in two processes at once)."""
    import time

    from atelier.demo.context import cached

    def build(path: Path) -> None:
        with open(log, "a") as handle:
            handle.write("built\n")
        time.sleep(1.0)
        (path / "product.txt").write_text("done")

    return (cached(Path(folder), {"k": 1}, build) / "product.txt").read_text()


def test_stages_side_by_side_build_a_shared_product_once(tmp_path):
    """Two demo workers needing the same cached folder: one builds it under its lock, the other waits and reuses it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    log = tmp_path / "builds.log"
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(_build_once, [str(tmp_path / "data")] * 2, [str(log)] * 2))
    assert done == ["done", "done"] and log.read_text() == "built\n"


def test_fast_opt_in_stages_report_tryon_and_design_beside_their_baselines(tmp_path):
    """The opt-in stages (run only when named) write their sections: try-on beside the masked person and the pasted
    garment, design beside caption-blind and sketch-blind, each check a paired test."""
    from atelier.commands import demo

    out = tmp_path / "demo"
    assert run_command(demo, ["--out", str(out), "--fast", "--task", "tryon", "--task", "design"]) == 0
    numbers = json.loads((out / "report.json").read_text())
    assert list(numbers) == ["tryon", "design"]
    methods = [row["method"] for row in numbers["tryon"]["tables"][0]["rows"]]
    assert methods == ["try-on (trained here)", "baseline: masked person unchanged", "baseline: garment pasted by bounding boxes"]
    images = [row["images"] for row in numbers["design"]["tables"][0]["rows"]]
    assert images[:3] == ["design (sketch + caption)", "caption removed (empty prompt)", "sketch removed (blank sketch)"]
    for task, claims in (("tryon", 2), ("design", 2)):
        assert len(numbers[task]["checks"]) == claims and all(test["n"] >= 2 for test in numbers[task]["tests"].values())
        assert (out / task / "test_grid.png").is_file()


def test_design_edge_agreement_counts_only_the_masked_region():
    """Edges outside the region (the kept person) do not count; inside, the same edges score 1 and none score 0."""
    import numpy as np
    from PIL import Image

    from atelier.demo.tryon import edge_f1

    truth = np.full((64, 48, 3), 255, np.uint8)
    truth[8:20, 4:44] = 0  # a dark bar above the region: edges outside
    truth[30:50, 10:38] = 0  # a dark box inside the region
    region = np.zeros((64, 48), bool)
    region[26:60, 4:44] = True
    plain_inside = truth.copy()
    plain_inside[26:60] = 255
    images = [Image.fromarray(a) for a in (truth, plain_inside)]
    scores = edge_f1(images, [Image.fromarray(truth)] * 2, [region] * 2)
    assert scores[0] == 1.0 and scores[1] == 0.0
    outside_changed = truth.copy()
    outside_changed[8:20] = 255  # only outside the region differs: still a perfect score
    assert edge_f1([Image.fromarray(outside_changed)], [Image.fromarray(truth)], [region])[0] == 1.0
