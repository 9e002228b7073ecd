"""Folder runs killed mid-way and rerun write byte-identical outputs (issue 19): translate, illustrate, pose-transfer.

The kill: the k-th output's save raises KeyboardInterrupt, after leaving the hidden temp file a `kill -9` in the middle
of an atomic write leaves. So k - 1 outputs exist, whole. The rerun keeps them and draws the rest, in other batches
than the first run would have; every output must equal, byte for byte, what one uninterrupted run writes (each image
has its own seed, so neither the batch nor the resumption may change it). Tiny random models on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atelier.commands import illustrate as illustrate_command
from atelier.commands import pose_transfer as pose_transfer_command
from atelier.commands import translate as translate_command
from tests.helpers import randomised_dual_lora_model, run_command, write_random_photos

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


def outputs(out: Path) -> dict[str, bytes]:
    """Every output image of a folder run (not the grid, not hidden temp files), by path relative to OUT."""
    return {path.relative_to(out).as_posix(): path.read_bytes() for path in sorted(out.rglob("*.png"))
            if path.name != "grid.png" and not path.name.startswith(".")}


def kill_at(monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    """Make the k-th image save die as a kill between two outputs would, leaving a half-written hidden temp file."""
    from atelier.utils import io

    real, saved = io.save_image, []

    def save(image, path, **kwargs):
        saved.append(path)
        if len(saved) == k:
            path = Path(path)
            (path.parent / f".{path.name}.kill.tmp.png").write_bytes(b"half an image")
            raise KeyboardInterrupt
        real(image, path, **kwargs)

    monkeypatch.setattr(io, "save_image", save)


def killed_and_rerun(module, argv: list[str], out: Path, k: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Run `argv` into `out`, killed at the k-th output; check what the kill left; rerun it to the end; its outputs."""
    with monkeypatch.context() as patch:
        kill_at(patch, k)
        with pytest.raises(KeyboardInterrupt):
            run_command(module, [*argv, "--out", str(out)])
    assert len(outputs(out)) == k - 1
    assert run_command(module, [*argv, "--out", str(out)]) == 0
    assert json.loads((out / "settings.json").read_text())["kept"] == k - 1
    return outputs(out)


def test_translate_killed_mid_way_resumes_to_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_random_photos(tmp_path / "photos", 5, (24, 20))
    argv = [str(tmp_path / "photos"), "--model", "tiny", "--size", "32x32", "--steps", "4", "--batch-size", "2",
            "--prompt", "an illustration"]
    assert run_command(translate_command, [*argv, "--out", str(tmp_path / "straight")]) == 0
    straight = outputs(tmp_path / "straight")
    assert len(straight) == 5
    assert killed_and_rerun(translate_command, argv, tmp_path / "killed", 3, monkeypatch) == straight


def test_illustrate_killed_mid_way_resumes_to_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier.methods.unidllora.dual_lora import save_dual_lora
    from atelier.methods.unidllora.sketch import SketchSettings, xdog_sketch
    from atelier.methods.unidllora.uni_adapter import UniAdapter
    from atelier.utils.io import write_json

    components, adapter = randomised_dual_lora_model()
    checkpoint = tmp_path / "dual-lora" / "final"
    save_dual_lora(checkpoint / "lora", components.unet)
    UniAdapter(adapter, xdog_sketch).save(checkpoint)
    write_json(checkpoint / "sketch.json", vars(SketchSettings()))
    write_random_photos(tmp_path / "photos", 4, (24, 20))
    argv = [str(tmp_path / "photos"), "--checkpoint", str(checkpoint), "--model", "tiny", "--size", "32x32",
            "--steps", "4", "--batch-size", "3"]
    assert run_command(illustrate_command, [*argv, "--out", str(tmp_path / "straight")]) == 0
    straight = outputs(tmp_path / "straight")
    assert len(straight) == 4
    assert killed_and_rerun(illustrate_command, argv, tmp_path / "killed", 2, monkeypatch) == straight


def test_pose_transfer_killed_mid_way_resumes_to_the_same_bytes(synth_root: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier.diffusion.components import build_tiny_components
    from atelier.methods.cfld.model import PoseModel, PoseModelConfig, save_pose_model
    from atelier.methods.cfld.network import CFLD, tiny_cfld_config

    components = build_tiny_components(seed=0)
    config = PoseModelConfig(cfld=tiny_cfld_config(), image_size=(64, 48), appearance_size=(64, 48), pose_size=(64, 48))
    model = PoseModel(CFLD(config.cfld, components.unet, (64, 48)), components.vae, components.scheduler, config)
    save_pose_model(model, tmp_path / "pose")
    argv = ["--checkpoint", str(tmp_path / "pose"), "--test-set", str(synth_root / "deepfashion"), "--limit", "4",
            "--steps", "2", "--batch-size", "3"]
    assert run_command(pose_transfer_command, [*argv, "--out", str(tmp_path / "straight")]) == 0
    straight = outputs(tmp_path / "straight")
    assert len(straight) == 4
    assert killed_and_rerun(pose_transfer_command, argv, tmp_path / "killed", 3, monkeypatch) == straight
