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
