"""Task `retrieval` on the shared loop: both phases end to end on FashionSynth's retrieval layouts, exact resume,
loadable outputs (the retrieval model and the captioner), and the config's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atelier.cli import main
from atelier.errors import UserError
from atelier.registry import build_task, load_config
from tests.helpers import assert_resumes_exactly

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-retrieval.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def retrieval_root(tmp_path_factory):
    from atelier.data.synth import write_retrieval

    root = tmp_path_factory.mktemp("retrieval")
    write_retrieval(root, identities=14, size=(64, 64), seed=1)
    return root


def overrides(root: Path, steps: int = 2) -> list[str]:
    return [f"data.fashiongen={root / 'fashiongen' / 'fashiongen_256_256_train.h5'}", f"train.max_steps={steps}",
            "train.batch_size=4", "train.checkpoint_every=1", "train.log_every=1", "train.sample_every=2",
            "model.caption_length=12", "sample.max_new_tokens=6"]


@pytest.fixture(scope="module")
def pretrained(retrieval_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("pretrain") / "run"
    assert main(["train", str(CONFIG), *overrides(retrieval_root), "--out", str(run)]) == 0
    return run


def test_pretrain_writes_a_loadable_model_and_captioner(pretrained):
    from atelier.methods.unifashion.model import load_retrieval_model
    from atelier.methods.unifashion.train import load_captioner, normalise

    model = load_retrieval_model(pretrained / "final")
    captioner = load_captioner(pretrained / "final", model)
    pixels = normalise(torch.full((2, 3, 64, 64), 128, dtype=torch.uint8))
    assert model.image_features(pixels).shape[:2] == (2, 8)
    assert len(captioner.generate(pixels, 4, model.tokenizer)) == 2
    sample = json.loads((pretrained / "samples" / "step-0000002.json").read_text())
    assert sample["queries"] == 21 and {"i2t_R@1_within_batch", "t2i_R@1_within_batch", "captions"} <= set(sample)
    assert [json.loads(line)["step"] for line in (pretrained / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_pretrain_resumes_exactly(pretrained, retrieval_root, tmp_path):
    assert_resumes_exactly(CONFIG, overrides(retrieval_root), tmp_path / "run", pretrained, "captioner.")


def test_composed_phase_continues_from_the_pretrained_model(pretrained, retrieval_root, tmp_path):
    from atelier.methods.unifashion.model import load_retrieval_model

    run = tmp_path / "composed"
    argv = ["train", str(CONFIG), *overrides(retrieval_root), "phase=composed", f"model.base={pretrained / 'final'}",
            "model.language_model=", f"data.fashioniq={retrieval_root / 'fashioniq'}", "--out", str(run)]
    assert main(argv) == 0
    assert not (run / "final" / "captioner").exists()
    assert load_retrieval_model(run / "final").tokenizer.get_vocab() == load_retrieval_model(pretrained / "final").tokenizer.get_vocab()
    assert "composed_R@1_within_batch" in json.loads((run / "samples" / "step-0000002.json").read_text())


def test_the_data_each_phase_needs_is_named(tmp_path):
    for phase, key in (("pretrain", "data.fashiongen"), ("composed", "data.fashioniq")):
        cfg = load_config(CONFIG, [f"phase={phase}", "data.fashiongen=", "data.fashioniq="])
        with pytest.raises(UserError, match=f"config.{key} is empty"):
            build_task(cfg)
