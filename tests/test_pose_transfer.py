"""CFLD sampling and training end to end at tiny size: guidance, `atelier train` (pose), resume, `atelier pose-transfer`."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atelier.cli import main
from atelier.diffusion.components import build_tiny_components
from atelier.methods.cfld.network import CFLD, tiny_cfld_config
from atelier.methods.cfld.sample import cfld_guidance, guided_noise
from atelier.metrics.matching import match_files, read_pairs
from atelier.registry import load_config
from tests.helpers import assert_resumes_exactly, quick_overrides, train_run

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-pose.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


def test_guidance_with_equal_scales_is_plain_classifier_free_guidance():
    torch.manual_seed(0)
    model = CFLD(tiny_cfld_config(), build_tiny_components().unet, (64, 48)).eval()
    generator = torch.Generator().manual_seed(0)
    source, pose = torch.rand(2, 3, 64, 48, generator=generator) * 2 - 1, torch.rand(2, 21, 64, 48, generator=generator)
    latents, t = torch.randn(2, 4, 16, 12, generator=generator), torch.tensor(400)
    with torch.no_grad():
        for conv in model.hybrid_attention.zero_conv_outs:  # a trained-looking model: non-zero query biases
            conv.bias.fill_(0.5)
        cond = model.condition(source, pose, (16, 12))
        null = model.null_context(2)
        eps_uc = model(latents, t, null).sample
        eps_pose = model(latents, t, null, cond.pose_features).sample
        eps_full = model(latents, t, cond.context, cond.pose_features, cond.query_bias).sample
        for scale in (1.0, 2.0, 4.5):
            batched = cfld_guidance(model, cond, scale, scale)(latents, t)
            torch.testing.assert_close(batched, eps_uc + scale * (eps_full - eps_uc), rtol=1e-4, atol=1e-4)
        general = cfld_guidance(model, cond, 2.0, 3.0)(latents, t)
    torch.testing.assert_close(general, eps_uc + 2 * (eps_pose - eps_uc) + 3 * (eps_full - eps_pose), rtol=1e-4, atol=1e-4)
    assert float((eps_pose - eps_uc).abs().max()) > 1e-4 and float((eps_full - eps_pose).abs().max()) > 1e-4
    one = torch.ones(1)
    assert float(guided_noise(0 * one, one, 3 * one, 2.0, 2.0)) == 6.0  # 0 + 2 (1 - 0) + 2 (3 - 1)


def _overrides(synth_root, tiny_model_dir, steps=2):
    return quick_overrides(tiny_model_dir, synth_root / "deepfashion", steps)


@pytest.fixture(scope="module")
def trained_run(synth_root, tiny_model_dir, tmp_path_factory):
    return train_run(CONFIG, _overrides(synth_root, tiny_model_dir), tmp_path_factory.mktemp("pose") / "run")


def test_train_pose_writes_a_loadable_cfld_folder(trained_run):
    final = trained_run / "final"
    assert {"cfld.safetensors", "cfld.yaml", "config.yaml", "unet", "vae", "scheduler"} <= {p.name for p in final.iterdir()}
    weights = load_file(str(final / "cfld.safetensors"))
    assert "null_prompt" in weights and not any(k.startswith("unet.") for k in weights)
    assert [json.loads(line)["step"] for line in (trained_run / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_pose_training_resumes_exactly(trained_run, synth_root, tiny_model_dir, tmp_path):
    assert_resumes_exactly(CONFIG, _overrides(synth_root, tiny_model_dir), tmp_path / "run", trained_run, "unet.up_blocks")


def test_pose_transfer_one_image_and_a_test_set(trained_run, synth_root, tmp_path):
    root = synth_root / "deepfashion"
    source, target = read_pairs(root / "fasion-resize-pairs-test.csv")[0]
    assert main(["pose-transfer", "--checkpoint", str(trained_run), "--source", str(root / "test_highres" / f"{source}.jpg"),
                 "--target-pose", str(root / "test_highres" / f"{target}.jpg"), "--steps", "2", "--out", str(tmp_path / "one")]) == 0
    assert (tmp_path / "one" / f"{source}_2_{target}.png").is_file() and (tmp_path / "one" / "preview" / "grid.png").is_file()
    out = tmp_path / "test"
    args = ["pose-transfer", "--checkpoint", str(trained_run / "final"), "--test-set", str(root), "--limit", "3",
            "--batch-size", "2", "--steps", "2", "--scheduler", "ddim", "--pose-scale", "1.5", "--full-scale", "2.5", "--out", str(out)]
    assert main(args) == 0
    generated = sorted(out.glob("*.png"))
    assert len(generated) == 3
    matched = match_files(generated, sorted((root / "test_highres").glob("*.jpg")), read_pairs(root / "fasion-resize-pairs-test.csv"))
    assert {(m.source, m.ground_truth.stem) for m in matched.matches} == set(read_pairs(root / "fasion-resize-pairs-test.csv")[:3])
    first = generated[0].stat().st_mtime_ns
    assert main(args) == 0 and generated[0].stat().st_mtime_ns == first  # existing outputs are kept
    settings = json.loads((out / "settings.json").read_text())
    assert settings["options"]["full_scale"] == 2.5 and settings["image_size"] == [96, 64]


def test_pose_transfer_bad_input(trained_run, synth_root, tmp_path, capsys):
    root = synth_root / "deepfashion"
    image = str(next((root / "test_highres").glob("*.jpg")))
    assert main(["pose-transfer", "--checkpoint", str(trained_run), "--source", image, "--test-set", str(root),
                 "--out", str(tmp_path / "a")]) == 2
    assert "either --source IMG --target-pose POSE, or --test-set DIR" in capsys.readouterr().err
    assert main(["pose-transfer", "--checkpoint", str(trained_run), "--source", image, "--target-pose",
                 f"x.jpg:{json.dumps([1] * 17)}:{json.dumps([1] * 17)}", "--out", str(tmp_path / "b")]) == 2
    assert "expected 18 joints" in capsys.readouterr().err
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "pytorch_model.bin").write_bytes(b"")
    (tmp_path / "release" / "pytorch_model_1.bin").write_bytes(b"")
    assert main(["pose-transfer", "--checkpoint", str(tmp_path / "release"), "--test-set", str(root), "--out", str(tmp_path / "c")]) == 2
    assert "pass --base with a Stable Diffusion 1.5 folder" in capsys.readouterr().err


def test_tiny_pose_yaml_is_the_demo_config(tmp_path):
    from atelier.config import to_dict
    from atelier.demo.context import DemoContext
    from atelier.demo.pose import pose_config

    ours = to_dict(load_config(CONFIG))
    demo = to_dict(pose_config(DemoContext(out=tmp_path), Path("base")))
    for section in ("cfld", "loss", "train", "null_prompt_dropout"):
        assert ours[section] == demo[section], section
    assert {k: v for k, v in ours["data"].items() if k != "root"} == {k: v for k, v in demo["data"].items() if k != "root"}
