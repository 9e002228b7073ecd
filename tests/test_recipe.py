"""The `fashionsynth-base` recipe (data -> VAE -> UNet + text encoder -> release) on a tiny scale, and released folders."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tests.helpers import cli_outcome

pytestmark = pytest.mark.usefixtures("one_thread", "isolated_cache")

STEPS = {"max_steps": 2, "batch_size": 2, "checkpoint_every": 1, "log_every": 1}


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    """A tiny recipe run (2 people, 2 steps a stage) and its config file."""
    folder = tmp_path_factory.mktemp("recipe")
    config = {"task": "fashionsynth-base", "architecture": "tiny", "resolution": [32, 32],
              "data": {"identities": 3, "poses_per_identity": 2, "size": [32, 48], "seed": 5, "test_fraction": 0.34},
              "vae": {"train": STEPS}, "unet": {"train": STEPS, "sample": {"prompts": []}}}
    path = folder / "base.yaml"
    path.write_text(yaml.safe_dump(config))
    code, output = cli_outcome(["train", str(path), "--out", str(folder / "run")])
    assert code == 0, output
    return path, folder / "run"


def test_recipe_runs_every_stage_and_releases_a_checked_fp16_model(recipe_run):
    from atelier.diffusion.components import load_components
    from atelier.diffusion.release import MANIFEST, verify_release

    _, run = recipe_run
    release = run / "release"
    for stage in ("vae", "unet"):
        assert (run / stage / "final").is_dir()
    verify_release(release)
    manifest = json.loads((release / MANIFEST).read_text())
    assert {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "config.yaml",
            "unet-log.jsonl", "vae-log.jsonl"} <= set(manifest)
    from safetensors.torch import load_file

    stored = load_file(str(release / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {value.dtype for value in stored.values()} == {torch.float16}
    released, trained = load_components(release), load_components(run / "unet" / "final")
    assert next(released.unet.parameters()).dtype == torch.float32  # the loader gives float32 weights
    for name, value in trained.unet.state_dict().items():  # the release is the trained UNet, rounded to fp16
        assert torch.equal(released.unet.state_dict()[name], value.half().float())
    # the VAE trained in stage 1 is the one inside the final model
    vae_stage = load_components(run / "vae" / "final").vae.state_dict()
    for name, value in trained.vae.state_dict().items():
        assert torch.equal(vae_stage[name], value)


def test_recipe_resume_skips_finished_stages(recipe_run):
    config, run = recipe_run
    before = (run / "unet" / "final" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    code, output = cli_outcome(["train", str(config), "--out", str(run), "--resume"])
    assert code == 0, output
    assert (run / "unet" / "final" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before


def test_damaged_release_is_refused_naming_the_file(recipe_run, tmp_path):
    import shutil

    from atelier.diffusion.release import verify_release
    from atelier.errors import DependencyError

    copy = tmp_path / "release"
    shutil.copytree(recipe_run[1] / "release", copy)
    weights = copy / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DependencyError, match="vae/diffusion_pytorch_model.safetensors does not match its sha256"):
        verify_release(copy)
    weights.unlink()
    with pytest.raises(DependencyError, match="is missing"):
        verify_release(copy)
