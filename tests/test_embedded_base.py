"""The embedded FashionSynth base: present, checked against its manifest at load, and drawing at 96x64."""

from __future__ import annotations

import shutil

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_embedded_base_loads_through_the_sd_loader_and_generates_at_96x64():
    from atelier.diffusion.components import load_components
    from atelier.diffusion.text2img import generate

    components = load_components("fashionsynth")
    assert next(components.unet.parameters()).dtype == torch.float32
    assert components.latent_scale == 4 and components.unet.config.in_channels == 4
    images = generate(components, ["a woman wearing a red dress"], size_hw=(96, 64), steps=2, guidance_scale=3.0,
                      seed=0, show_progress=False).images
    assert images[0].size == (64, 96)


def test_embedded_base_ships_its_config_logs_and_a_small_fp16_release():
    from atelier.diffusion.components import embedded_base_dir
    from atelier.diffusion.release import MANIFEST

    folder = embedded_base_dir()
    for name in (MANIFEST, "config.yaml", "vae-log.jsonl", "unet-log.jsonl"):
        assert (folder / name).is_file(), name
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    assert size < 40e6, f"the embedded base is {size / 1e6:.1f} MB; it should stay tens of MB at most"


def test_a_damaged_embedded_base_is_refused_before_loading(tmp_path, monkeypatch):
    from atelier.diffusion import components
    from atelier.errors import DependencyError

    copy = tmp_path / "fashionsynth"
    shutil.copytree(components.embedded_base_dir(), copy)
    monkeypatch.setattr(components, "embedded_base_dir", lambda: copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in a weight
    weights.write_bytes(bytes(data))
    with pytest.raises(DependencyError, match="unet/diffusion_pytorch_model.safetensors does not match its sha256"):
        components.load_components("fashionsynth")
