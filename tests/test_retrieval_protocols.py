"""`atelier evaluate`'s retrieval and caption protocols: captions files with known scores (and the order of
predictions and references), METEOR's Java plumbing and its missing reason, and fashioniq / fashiongen end to end on a
tiny retrieval run over FashionSynth's retrieval layouts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from atelier.cli import main
from atelier.errors import UserError
from atelier.metrics.caption_eval import evaluate_captions
from atelier.metrics.report import markdown_table

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-retrieval.yaml"
REPORT_KEYS = {"title", "protocol", "setting", "metrics", "labels", "counts", "missing", "details"}
pytestmark = pytest.mark.usefixtures("one_thread")


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


REFERENCES = {
    "B001": ["a red dress with long sleeves", "long sleeved red dress"],
    "B002": ["a blue shirt with a collar", "blue collared shirt"],
    "B003": ["black trousers with a belt"],
}


@pytest.fixture
def no_meteor(monkeypatch):
    monkeypatch.delenv("ATELIER_METEOR_JAR", raising=False)


def test_perfect_captions_score_bleu_100_and_high_cider(tmp_path, no_meteor):
    refs = write_json(tmp_path / "refs.json", REFERENCES)
    perfect = write_json(tmp_path / "gen.json", {"B001": "a red dress with long sleeves", "images/B002.png":
                                                 "a blue shirt with a collar", "B003": "black trousers with a belt"})
    report = evaluate_captions(perfect, refs)
    assert REPORT_KEYS <= set(report) and report["protocol"] == "captions"
    assert report["metrics"]["bleu_4"] == pytest.approx(100.0, abs=1e-6)
    assert report["metrics"]["rouge_l"] == pytest.approx(100.0)
    assert report["metrics"]["cider_d"] > 100  # CIDEr-D x 100 of exact matches among three images
    assert report["metrics"]["meteor"] is None and "ATELIER_METEOR_JAR" in report["missing"]["meteor"]
    assert report["counts"] == {"scored": 3, "references": 5, "unused_reference_ids": 0}
    table = markdown_table(report)
    assert "| bleu_4 | 100.00 |" in table and "`meteor` missing" in table


def test_predictions_and_references_are_not_interchangeable(tmp_path, no_meteor):
    generated = {"B001": "a red dress", "B002": "a blue shirt with a collar and buttons"}
    references = {"B001": ["a red dress with long sleeves"], "B002": ["a blue shirt with a collar"]}
    forward = evaluate_captions(write_json(tmp_path / "g.json", generated), write_json(tmp_path / "r.json", references))
    swapped = evaluate_captions(write_json(tmp_path / "g2.json", {k: v[0] for k, v in references.items()}),
                                write_json(tmp_path / "r2.json", generated))
    # the short prediction "a red dress" is penalised for brevity against its longer reference, not the other way
    assert forward["metrics"]["bleu_4"] != pytest.approx(swapped["metrics"]["bleu_4"])
    assert forward["details"]["bleu_1"] < swapped["details"]["bleu_1"]


def test_ids_match_by_key_then_stem_and_unmatched_ones_are_listed(tmp_path, no_meteor):
    refs = write_json(tmp_path / "refs.json", {"B001": "a red dress", "B002": "a blue shirt"})
    only_one = evaluate_captions(write_json(tmp_path / "one.json", {"/data/x/B002.jpg": "a blue shirt"}), refs)
    assert only_one["counts"] == {"scored": 1, "references": 1, "unused_reference_ids": 1}
    stray = write_json(tmp_path / "stray.json", {"B001": "a dress", "C7": "x", "C8.png": "y", "C9": "z"})
    with pytest.raises(UserError, match=r"3 generated ids have no reference .* \(first: 'C7', 'C8.png', 'C9'\)"):
        evaluate_captions(stray, refs)
    twice = write_json(tmp_path / "twice.json", {"B001.png": "a", "B001.jpg": "b"})
    with pytest.raises(UserError, match="both match the reference 'B001'"):
        evaluate_captions(twice, refs)


@pytest.mark.parametrize("content, fragment", [
    ([["a caption"]], "holds a JSON list; expected an object"),
    ({"B001": ["a list"]}, "the caption of 'B001' is a JSON list; expected text"),
    ({}, "empty object"),
])
def test_generated_files_that_are_not_objects_of_strings_are_refused(tmp_path, content, fragment):
    refs = write_json(tmp_path / "refs.json", REFERENCES)
    with pytest.raises(UserError, match=fragment):
        evaluate_captions(write_json(tmp_path / "gen.json", content), refs)
    with pytest.raises(UserError, match="gen.json: not valid JSON"):
        evaluate_captions(_raw(tmp_path / "gen.json", "{oops"), refs)


def _raw(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reference_files_need_text_or_lists_of_text(tmp_path):
    gen = write_json(tmp_path / "gen.json", {"B001": "a red dress"})
    with pytest.raises(UserError, match="references of 'B001' are not text or a non-empty list"):
        evaluate_captions(gen, write_json(tmp_path / "refs.json", {"B001": []}))


FAKE_JAVA = """#!/bin/sh
# coco-caption's METEOR protocol: SCORE lines are answered by statistics, an EVAL line by per-image scores + the total
echo "$@" > "$(dirname "$0")/argv.txt"
while read -r line; do
  case "$line" in
    SCORE*) echo "1.0 2.0 3.0" ;;
    EVAL*) count=$(printf '%s' "$line" | grep -o '|||' | wc -l); i=0
           while [ "$i" -lt "$count" ]; do echo 0.5; i=$((i + 1)); done; echo 0.4213 ;;
  esac
done
"""


def test_meteor_runs_the_java_scorer_when_java_and_the_jar_are_there(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = _raw(bin_dir / "java", FAKE_JAVA)
    java.chmod(0o755)
    jar = _raw(tmp_path / "meteor-1.5.jar", "not really a jar")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ATELIER_METEOR_JAR", str(jar))
    refs = write_json(tmp_path / "refs.json", REFERENCES)
    report = evaluate_captions(write_json(tmp_path / "gen.json", {"B001": "A red dress!", "B003": "trousers"}), refs)
    assert report["metrics"]["meteor"] == pytest.approx(42.13) and "meteor" not in report["missing"]
    assert (bin_dir / "argv.txt").read_text().split() == ["-jar", "-Xmx2G", str(jar), "-", "-", "-stdio", "-l", "en",
                                                           "-norm"]
    monkeypatch.setenv("ATELIER_METEOR_JAR", str(tmp_path / "nowhere.jar"))
    assert "nowhere.jar is not a file" in evaluate_captions(write_json(tmp_path / "g.json", {"B001": "x"}), refs)["missing"]["meteor"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "no `java` on PATH" in evaluate_captions(write_json(tmp_path / "g.json", {"B001": "x"}), refs)["missing"]["meteor"]


# --- fashioniq / fashiongen on a tiny trained run ------------------------------------------------------------------

@pytest.fixture(scope="module")
def retrieval_root(tmp_path_factory):
    from atelier.data.synth import write_retrieval

    root = tmp_path_factory.mktemp("retrieval")
    write_retrieval(root, identities=40, size=(64, 64), seed=1)  # val triplets: shirt 2, toptee 2, dress none
    return root


@pytest.fixture(scope="module")
def trained_run(retrieval_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("pretrain") / "run"
    argv = ["train", str(CONFIG), f"data.fashiongen={retrieval_root / 'fashiongen' / 'fashiongen_256_256_train.h5'}",
            "train.max_steps=2", "train.batch_size=4", "train.checkpoint_every=2", "train.sample_every=2",
            "model.language_model=", "--out", str(run)]
    assert main(argv) == 0
    return run


def test_fashioniq_protocol_end_to_end(trained_run, retrieval_root, tmp_path, capsys):
    out = tmp_path / "fiq.json"
    argv = ["evaluate", "--protocol", "fashioniq", "--checkpoint", str(trained_run), "--data",
            str(retrieval_root / "fashioniq"), "--categories", "shirt", "toptee", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert REPORT_KEYS <= set(report) and report["setting"] == "val split, shirt, toptee"
    assert list(report["metrics"]) == ["shirt_R@10", "shirt_R@50", "toptee_R@10", "toptee_R@50", "average_R@10",
                                       "average_R@50", "mean"]
    assert report["counts"] == {"scored": 4, "shirt_queries": 2, "shirt_gallery": 2, "toptee_queries": 2,
                                "toptee_gallery": 2}
    assert report["metrics"]["shirt_R@10"] == 100.0  # a gallery of 2 holds every target in its top 10
    assert '"{caption 1} and {caption 2}"' in report["labels"]["shirt_R@10"] and report["missing"] == {}
    printed = capsys.readouterr().out
    assert "| shirt_R@10 | 100.00 |" in printed and "counts: scored 4" in printed
    with pytest.raises(UserError, match="no val triplets for dress"):
        from atelier.methods.unifashion.evaluate import evaluate_fashioniq

        evaluate_fashioniq(trained_run / "final", retrieval_root / "fashioniq")


def test_fashioniq_similarities_rank_the_target(trained_run, retrieval_root):
    from atelier.data.formats.fashioniq import load_fashioniq
    from atelier.methods.unifashion.evaluate import fashioniq_similarities
    from atelier.methods.unifashion.model import load_retrieval_model

    split = load_fashioniq(retrieval_root / "fashioniq", "train", ["shirt"])
    (similarity, targets), = fashioniq_similarities(load_retrieval_model(trained_run / "final"), split, ["shirt"], 5,
                                                    "cpu").values()
    assert similarity.shape == (len(split.triplets["shirt"]), len(split.galleries["shirt"]))
    assert [split.galleries["shirt"][i] for i in targets] == [t.target for t in split.triplets["shirt"]]


def test_fashiongen_protocol_end_to_end(trained_run, retrieval_root, tmp_path, capsys):
    from atelier.methods.unifashion.evaluate import evaluate_fashiongen

    data = retrieval_root / "fashiongen" / "fashiongen_256_256_validation.h5"
    out = tmp_path / "fg.json"
    assert main(["evaluate", "--protocol", "fashiongen", "--checkpoint", str(trained_run), "--data", str(data),
                 "--device", "cpu", "--out", str(out)]) == 0
    report, printed = json.loads(out.read_text()), capsys.readouterr().out
    assert REPORT_KEYS <= set(report) and "| val100_mean |" in printed
    # 15 products: no sub-category holds 101, so FAME-ViL's numbers are missing with the reason; val100 is computed
    assert report["counts"] == {"scored": 15, "fame_vil_queries": 0, "fame_vil_candidates": 101, "val100_queries": 15}
    assert report["metrics"]["i2t_R@1"] is None and "more than 100 products" in report["missing"]["mean"]
    assert "- `i2t_R@1`, `i2t_R@5`," in printed and printed.count("more than 100 products") == 1
    assert "not comparable with FAME-ViL" in report["labels"]["val100_mean"]
    assert report["labels"]["t2i_R@5"].startswith("Recall@5 (%), text->image, FAME-ViL")
    small = evaluate_fashiongen(trained_run, data, seed=1, negatives=1, queries=3)
    assert small["counts"]["fame_vil_queries"] == 3 and small["counts"]["fame_vil_candidates"] == 2
    assert small["missing"] == {} and 0 <= small["metrics"]["mean"] <= 100
    assert small["metrics"]["i2t_R@5"] == 100.0  # two candidates
    assert "+ 1 same-sub-category negatives (seed 1)" in small["labels"]["i2t_R@1"]
    assert small["metrics"]["val100_mean"] == report["metrics"]["val100_mean"]


def test_fashiongen_scores_are_those_of_the_model_features(trained_run, retrieval_root):
    from atelier.data.formats.fashiongen import FashionGenH5
    from atelier.methods.unifashion.evaluate import evaluate_fashiongen, fashiongen_features
    from atelier.methods.unifashion.model import load_retrieval_model, similarity
    from atelier.metrics.retrieval import recall_at_k

    data = retrieval_root / "fashiongen" / "fashiongen_256_256_validation.h5"
    with FashionGenH5(data) as file:
        images, texts = fashiongen_features(load_retrieval_model(trained_run / "final"), file, 4, "cpu")
    scores = similarity(images, texts)  # the model's own ITC scores, all 15 products in one batch of 100
    report = evaluate_fashiongen(trained_run, data)
    for k in (1, 5, 10):
        expected = recall_at_k(scores, range(15), ks=(k,))[f"R@{k}"]
        assert report["metrics"][f"val100_i2t_R@{k}"] == pytest.approx(expected)
        expected = recall_at_k(scores.t(), range(15), ks=(k,))[f"R@{k}"]
        assert report["metrics"][f"val100_t2i_R@{k}"] == pytest.approx(expected)


def test_retrieval_checkpoint_accepts_run_final_and_names_other_tasks(trained_run, tmp_path):
    from atelier.methods.unifashion.evaluate import retrieval_checkpoint

    assert retrieval_checkpoint(trained_run) == retrieval_checkpoint(trained_run / "final") == trained_run / "final"
    pose = tmp_path / "pose"
    pose.mkdir()
    (pose / "config.yaml").write_text("task: pose\n")
    with pytest.raises(UserError, match="a 'pose' training run; expected a retrieval run"):
        retrieval_checkpoint(pose)
