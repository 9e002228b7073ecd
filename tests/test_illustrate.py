"""Uni-DlLoRA inference: adapter scale 0 is plain img2img, LoRA weights switch and zero is the base, the
`atelier train` -> `atelier illustrate` path and the released checkpoint layout through the CLI (tiny models, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from atelier.commands import illustrate as illustrate_command
from atelier.commands import train as train_command
from atelier.diffusion.components import build_tiny_components
from atelier.diffusion.img2img import translate
from atelier.errors import UserError
from atelier.methods.unidllora.model import Illustrator
from atelier.methods.unidllora.sample import illustrate
from atelier.methods.unidllora.sketch import PiDiNet, xdog_sketch
from atelier.methods.unidllora.uni_adapter import UniAdapter, build_uni_adapter
from tests.helpers import randomised_dual_lora_model, run_command

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SETTINGS = dict(strength=0.7, steps=10, guidance_scale=5.0, seed=3, scheduler="ddpm", show_progress=False)



@pytest.fixture(scope="module")
def model() -> Illustrator:
    """A tiny model with randomised dual LoRA and adapters (so each visibly changes the output)."""
    components, adapter = randomised_dual_lora_model()
    return Illustrator(components, UniAdapter(adapter, xdog_sketch))


def photos(count: int = 2) -> torch.Tensor:
    return torch.rand(count, 3, 64, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_adapter_scale_zero_is_plain_img2img(model) -> None:
    images, weights = photos(), {"real": 0.0, "illustration": 1.0}
    off = illustrate(model, images, adapter_scale=0.0, lora_weights=weights, **SETTINGS)
    plain = translate(model.components, images, ["", ""], **{**SETTINGS, "guidance_scale": 1.0})
    torch.testing.assert_close(off.latents, plain.latents, rtol=0, atol=0)
    on = illustrate(model, images, adapter_scale=1.0, lora_weights=weights, **SETTINGS)
    assert (on.latents - off.latents).abs().max() > 1e-3
    assert on.sketches.shape == (2, 1, 64, 48)
    sketch_only = illustrate(model, images, adapter_weights=[0.0, 1.0], lora_weights=weights, **SETTINGS)
    assert (sketch_only.latents - on.latents).abs().max() > 1e-3


def test_lora_weights_switch_the_output_and_zero_is_the_base(model) -> None:
    images = photos()
    results = {name: illustrate(model, images, lora_weights=weights, **SETTINGS).latents for name, weights in
               {"illustration": {"illustration": 1.0}, "real": {"real": 1.0}, "off": {"real": 0.0, "illustration": 0.0}}.items()}
    assert (results["illustration"] - results["real"]).abs().max() > 1e-3
    base = Illustrator(build_tiny_components(), model.uni_adapter)  # the same weights without any LoRA injected
    torch.testing.assert_close(results["off"], illustrate(base, images, **SETTINGS).latents, rtol=0, atol=0)
    with pytest.raises(UserError, match="--strength"):
        illustrate(model, images, strength=1.5, **{k: v for k, v in SETTINGS.items() if k != "strength"})
    with pytest.raises(UserError, match="adapter scale"):
        illustrate(model, images, adapter_scale=-1.0, **SETTINGS)


def test_train_then_illustrate_folders_from_the_command_line(synth_root, tmp_path) -> None:
    style = synth_root / "style"
    run = tmp_path / "run"
    run_command(train_command, [str(CONFIGS / "tiny-dual-lora.yaml"), "model.base=tiny", f"data.real_root={style / 'photo'}",
                                f"data.illustration_root={style / 'illustration'}", f"data.list_file={style / 'train.lst'}",
                                "data.resolution=[48, 32]", "data.max_images=4", "train.max_steps=2", "train.batch_size=2",
                                "train.sample_every=2", "sample.count=2", "sample.steps=4", "--out", str(run)])
    assert (run / "samples" / "step-0000002.png").is_file()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in sorted(p.name for p in (style / "photo").glob("*.jpg"))[:3]:
        (inputs / name).write_bytes((style / "photo" / name).read_bytes())
    (inputs / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    argv = [str(inputs), "--checkpoint", str(run / "final"), "--out", str(out), "--size", "32x48", "--steps", "4", "--batch-size", "2"]
    assert run_command(illustrate_command, argv) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert len(settings["written"]) == 3 and settings["skipped"][0]["file"].endswith("broken.png")
    assert Image.open(out / "inputs" / settings["written"][0].split("/")[-1]).size == (32, 48)
    assert (out / "grid.png").is_file() and settings["lora_weights_used"] == {"real": 0.0, "illustration": 1.0}
    for flag, value, message in (("--lora-weights", "photo=1", "--lora-weights"), ("--adapter-weights", "rgb=x", "not a number"),
                                 ("--size", "40x40", "multiples of 16")):
        with pytest.raises(UserError, match=message):
            run_command(illustrate_command, argv[:-4] + ["--overwrite", flag, value] + (["--size", "32x48"] if flag != "--size" else []))
    with pytest.raises(UserError, match="not a folder"):
        run_command(illustrate_command, [str(inputs), "--checkpoint", str(tmp_path / "none"), "--out", str(out)])


def released_checkpoint(folder, unet, latent_scale: int) -> None:
    """adapter/ + adapter_1/ (MultiAdapter), custom_duallora/duallora.bin, pidnet/table5_pidinet.pth."""
    from diffusers.models.lora import LoRALinearLayer

    build_uni_adapter(unet, latent_scale, num_res_blocks=1).save_pretrained(str(folder / "adapter"))
    entries = {}
    for key in ("unet_custom.illu_lora_parameter", "unet_custom.real_lora_parameter"):
        layers = torch.nn.ModuleList()
        for processor in unet.attn_processors:
            attention = unet.get_submodule(processor.removesuffix(".processor"))
            for linear in (attention.to_q, attention.to_k, attention.to_v, attention.to_out[0]):
                layers.append(LoRALinearLayer(linear.in_features, linear.out_features, rank=4))
        entries[key] = layers
    (folder / "custom_duallora").mkdir(parents=True)
    torch.save(entries, folder / "custom_duallora" / "duallora.bin")
    (folder / "pidnet").mkdir()
    torch.save({"state_dict": {f"module.{k}": v for k, v in PiDiNet().state_dict().items()}}, folder / "pidnet" / "table5_pidinet.pth")


def test_released_checkpoint_layout_runs_through_the_command_line(tmp_path) -> None:
    components = build_tiny_components()
    released = tmp_path / "released"
    released_checkpoint(released, components.unet, components.latent_scale)
    image = tmp_path / "photo.png"
    Image.fromarray((torch.rand(64, 48, 3, generator=torch.Generator().manual_seed(1)) * 255).byte().numpy()).save(image)
    out = tmp_path / "out"
    argv = [str(image), "--checkpoint", str(released), "--out", str(out), "--size", "48x64", "--steps", "4"]
    assert run_command(illustrate_command, argv + ["--model", "tiny"]) == 0
    assert Image.open(out / "photo.png").size == (48, 64)
    with pytest.raises(UserError, match="pass --model"):  # the released folder does not name its base model
        run_command(illustrate_command, argv + ["--overwrite"])
