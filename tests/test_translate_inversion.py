"""Translate's options beyond the recipe: DDIM inversion by the base model (LoRA bypassed) and detail restoration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.diffusion.encode import encode_images
from atelier.diffusion.img2img import translate, with_lost_detail
from atelier.diffusion.lora import add_lora, fuse_lora, lora_disabled, lora_parameters
from atelier.errors import UserError
from atelier.utils.images import tensor_to_pil
from tests.helpers import run_command
from tests.test_translate import frozen_tiny, model_and_lora, random_images  # noqa: F401 (fixture)

SETTINGS = dict(strength=0.3, steps=30, guidance_scale=1.0, show_progress=False)


def tiny_with_lora():
    components = frozen_tiny()
    add_lora(components.unet, 4, 8.0, 0.0, ["to_q", "to_k", "to_v", "to_out.0"])
    with torch.no_grad():
        for param in lora_parameters(components.unet).values():
            param.normal_(0, 0.2, generator=torch.Generator().manual_seed(param.numel()))
    return components


def unet_output(components) -> torch.Tensor:
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return components.unet(x, 10, context).sample


def test_lora_disabled_runs_the_base_model_and_restores_the_lora() -> None:
    components = tiny_with_lora()
    with_lora = unet_output(components)
    base = frozen_tiny()
    with lora_disabled([components.unet, components.text_encoder]):
        torch.testing.assert_close(unet_output(components), unet_output(base), rtol=0, atol=1e-6)
        with lora_disabled([components.unet]):  # nested: still off after the inner block
            pass
        torch.testing.assert_close(unet_output(components), unet_output(base), rtol=0, atol=1e-6)
    torch.testing.assert_close(unet_output(components), with_lora, rtol=0, atol=0)
    assert (with_lora - unet_output(base)).abs().max() > 1e-3


def test_lora_disabled_refuses_a_fused_lora() -> None:
    components = tiny_with_lora()
    fuse_lora([components.unet])
    with pytest.raises(ValueError, match="fuse_lora"):
        with lora_disabled([components.unet]):
            pass


def test_inversion_without_the_lora_returns_the_input_and_the_lora_changes_it() -> None:
    components, images = tiny_with_lora(), random_images()
    init = encode_images(components.vae, images)[0]
    with lora_disabled([components.unet]):
        base = translate(components, images, ["", ""], inversion=True, **SETTINGS).latents
        sdedit = translate(components, images, ["", ""], **SETTINGS).latents
    styled = translate(components, images, ["", ""], inversion=True, **SETTINGS).latents
    inversion_error, sdedit_error = (base - init).abs().mean(), (sdedit - init).abs().mean()
    assert inversion_error < 0.1 * sdedit_error, (inversion_error, sdedit_error)
    assert (styled - init).abs().mean() > 3 * inversion_error  # the change is the LoRA's


def test_a_shared_inversion_and_restored_detail_equal_running_each_variant_alone() -> None:
    """What the demo's style stage relies on: `inverted=` (an earlier call's start) skips the inversion with an
    identical result, and with_lost_detail of a run's latents is that run with restore_detail."""
    components, images = tiny_with_lora(), random_images()
    alone = translate(components, images, ["a", "b"], inversion=True, restore_detail=True, **SETTINGS)
    with lora_disabled([components.unet]):
        base_run = translate(components, images, ["", ""], inversion=True, **SETTINGS)
    shared = translate(components, images, ["a", "b"], inversion=True, inverted=base_run.start, **SETTINGS)
    torch.testing.assert_close(shared.start, alone.start, rtol=0, atol=0)
    torch.testing.assert_close(shared.latents, alone.latents, rtol=0, atol=0)
    restored = [tensor_to_pil(image) for image in with_lost_detail(components.vae, shared.latents, images)]
    for ours, theirs in zip(restored, alone.images):
        assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    with pytest.raises(ValueError, match="inversion=True"):
        translate(components, images, ["a", "b"], inverted=base_run.start, **SETTINGS)


def test_inversion_needs_ddim() -> None:
    with pytest.raises(UserError, match="--scheduler ddim"):
        translate(frozen_tiny(), random_images(), ["", ""], inversion=True, scheduler="ddpm", **SETTINGS)


def test_restore_detail_at_strength_zero_returns_the_input_itself() -> None:
    components, images = frozen_tiny(), random_images()
    out = translate(components, images, ["", ""], restore_detail=True, **{**SETTINGS, "strength": 0.0})
    for image, tensor in zip(out.images, images):
        difference = np.abs(np.asarray(image, np.int16) - np.asarray(tensor_to_pil(tensor), np.int16))
        assert difference.max() <= 1  # rounding only; without restore_detail it is the VAE's full error


def test_translate_command_inversion_with_a_lora_that_would_otherwise_be_fused(model_and_lora, tmp_path: Path) -> None:  # noqa: F811
    from atelier.commands import translate as command

    base, lora = model_and_lora
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "p.png")
    out = tmp_path / "out"
    argv = [str(tmp_path / "p.png"), "--model", str(base), "--lora", str(lora), "--out", str(out),
            "--size", "32x32", "--steps", "4", "--inversion", "--restore-detail", "--source-prompt", "a photo"]
    assert run_command(command, argv) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["options"]["inversion"] and settings["speed"]["fuse_lora"] is False
    assert Image.open(out / "p.png").size == (32, 32)
