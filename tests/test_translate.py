"""Style translation: SDEdit strength, image conditioning, and the translate/generate commands (tiny models, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.diffusion.components import build_tiny_components, freeze
from atelier.diffusion.encode import encode_images
from atelier.diffusion.image_adapter import attach_image_adapter, tiny_image_encoder
from atelier.diffusion.img2img import translate
from atelier.diffusion.lora import add_lora, lora_parameters, save_lora
from atelier.diffusion.sampling import decode_latents
from atelier.errors import UserError
from atelier.utils.images import tensor_to_pil
from tests.helpers import run_command


def random_images(count: int = 2, size: tuple[int, int] = (32, 32), seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def frozen_tiny():
    components = build_tiny_components()
    freeze(components.unet, components.vae, components.text_encoder)
    return components



def test_strength_zero_returns_the_input_through_the_vae() -> None:
    components, images = frozen_tiny(), random_images()
    out = translate(components, images, ["", ""], strength=0.0, steps=10, show_progress=False)
    latents = encode_images(components.vae, images)[0]
    torch.testing.assert_close(out.latents, latents, rtol=0, atol=0)
    round_trip = [tensor_to_pil(image) for image in decode_latents(components.vae, latents)]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(out.images, round_trip))


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_strength_outside_unit_interval_is_a_clear_error(strength: float) -> None:
    with pytest.raises(UserError, match="--strength"):
        translate(frozen_tiny(), random_images(), ["", ""], strength=strength, show_progress=False)


def test_image_cond_scale_zero_equals_running_without_the_adapter() -> None:
    components, images = frozen_tiny(), random_images()
    settings = dict(strength=0.6, steps=10, guidance_scale=3.0, seed=3, show_progress=False)
    plain = translate(components, images, ["a red dress"] * 2, **settings)
    adapter = attach_image_adapter(components.unet, tiny_image_encoder())
    with torch.no_grad():
        for param in adapter.parameters().values():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())) * 0.2)
    off = translate(components, images, ["a red dress"] * 2, image_adapter=adapter, image_cond_scale=0.0, **settings)
    on = translate(components, images, ["a red dress"] * 2, image_adapter=adapter, image_cond_scale=0.8, **settings)
    torch.testing.assert_close(off.latents, plain.latents, rtol=0, atol=1e-6)
    assert (on.latents - plain.latents).abs().max() > 1e-3


@pytest.fixture(scope="module")
def model_and_lora(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    components = build_tiny_components()
    components.save(root / "base")
    add_lora(components.unet, 4, 8.0, 0.0, ["to_q", "to_k", "to_v", "to_out.0"])
    with torch.no_grad():
        for param in lora_parameters(components.unet).values():
            param.normal_(0, 0.05, generator=torch.Generator().manual_seed(param.numel()))
    save_lora(root / "lora", components.unet)
    return root / "base", root / "lora"


def test_translate_command_folder_mode(model_and_lora: tuple[Path, Path], tmp_path: Path) -> None:
    from atelier.commands import translate as command

    base, lora = model_and_lora
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for index, folder in enumerate([photos, photos, photos / "sub"]):
        Image.fromarray(np.full((40, 30, 3), 60 * index, np.uint8)).save(folder / f"p{index}.jpg")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    argv = [str(photos), "--model", str(base), "--lora", str(lora), "--out", str(out), "--size", "32x32",
            "--steps", "4", "--batch-size", "2", "--prompt", "an illustration, "]
    assert run_command(command, argv) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png") if p.name != "grid.png")
    assert written == ["photos/p0.png", "photos/p1.png", "photos/sub/p2.png"]
    assert Image.open(out / "photos" / "p0.png").size == (32, 32)
    settings = json.loads((out / "settings.json").read_text())
    assert [Path(s["file"]).name for s in settings["skipped"]] == ["broken.jpg"]
    assert settings["options"]["strength"] == 0.5 and (out / "grid.png").is_file()

    (out / "photos" / "p1.png").write_bytes(b"kept")  # existing outputs are kept unless --overwrite
    run_command(command, argv)
    assert (out / "photos" / "p1.png").read_bytes() == b"kept"
    assert json.loads((out / "settings.json").read_text())["kept"] == 3
    run_command(command, argv + ["--overwrite"])
    assert Image.open(out / "photos" / "p1.png").size == (32, 32)


def test_translate_command_rejects_bad_strength(model_and_lora: tuple[Path, Path], tmp_path: Path) -> None:
    from atelier.commands import translate as command

    base, lora = model_and_lora
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "p.png")
    with pytest.raises(UserError, match="--strength"):
        run_command(command, [str(tmp_path / "p.png"), "--model", str(base), "--lora", str(lora),
                              "--out", str(tmp_path / "out"), "--strength", "1.5", "--size", "32x32"])


def test_generate_command_writes_images_grid_and_settings(model_and_lora: tuple[Path, Path], tmp_path: Path) -> None:
    from atelier.commands import generate as command

    base, lora = model_and_lora
    out = tmp_path / "gen"
    assert run_command(command, ["--model", str(base), "--lora", str(lora), "--prompt", "a red dress",
                                 "--num-images", "2", "--steps", "3", "--size", "32x32", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["0000.png", "0001.png", "grid.png", "settings.json"]
    with pytest.raises(UserError, match="--overwrite"):
        run_command(command, ["--model", str(base), "--prompt", "x", "--out", str(out)])
