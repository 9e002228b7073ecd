"""Image adapter: published ip-adapter_sd15 layout, diffusers interop, clear errors, training (tiny models, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.config import ModelConfig, TrainConfig
from atelier.diffusion.components import build_tiny_components
from atelier.diffusion.image_adapter import (
    ImageAdapter,
    attach_image_adapter,
    load_image_adapter,
    tiny_image_encoder,
)
from atelier.errors import UserError
from atelier.methods.style.train_adapter import ImageAdapterConfig, ImageAdapterSampleConfig, ImageAdapterTask
from atelier.training.loop import train
from atelier.training.tasks.autoencoder import ImageFolderConfig
from tests.helpers import write_random_photos

IMAGES = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def perturbed_adapter(unet: torch.nn.Module) -> ImageAdapter:
    """An adapter whose weights are not the IP-Adapter init, so a wrong key mapping would show."""
    adapter = attach_image_adapter(unet, tiny_image_encoder())
    with torch.no_grad():
        for name, param in adapter.parameters().items():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(len(name) + param.numel())) * 0.2)
    return adapter


def unet_output(unet: torch.nn.Module, image_embeds: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    text = torch.randn(2, 77, 64, generator=generator)
    with torch.no_grad():
        return unet(latents, torch.tensor([100, 800]), text, added_cond_kwargs={"image_embeds": [image_embeds]}).sample


def test_saved_adapter_uses_the_published_layout_and_loads_in_diffusers(tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    ours = build_tiny_components()
    adapter = perturbed_adapter(ours.unet)
    adapter.set_scale(0.7)
    embeds = adapter.embed(IMAGES)
    expected = unet_output(ours.unet, embeds)
    adapter.save(tmp_path)
    keys = set(adapter.state_dict())
    assert {"image_proj.proj.weight", "image_proj.norm.bias", "ip_adapter.1.to_k_ip.weight", "ip_adapter.3.to_v_ip.weight"} <= keys
    assert (tmp_path / "image_encoder" / "config.json").is_file()

    theirs = build_tiny_components()
    pipe = StableDiffusionPipeline(vae=theirs.vae, text_encoder=theirs.text_encoder, tokenizer=theirs.tokenizer,
                                   unet=theirs.unet, scheduler=theirs.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.load_ip_adapter(str(tmp_path), subfolder="", weight_name="ip-adapter.safetensors", image_encoder_folder=None)
    pipe.set_ip_adapter_scale(0.7)
    torch.testing.assert_close(unet_output(pipe.unet, embeds), expected, rtol=0, atol=1e-6)

    again = build_tiny_components()
    loaded = load_image_adapter(tmp_path, again.unet, scale=0.7)
    torch.testing.assert_close(unet_output(again.unet, loaded.embed(IMAGES)), expected, rtol=0, atol=1e-6)


def test_pickled_bin_layout_loads_with_weights_only(tmp_path: Path) -> None:
    source = build_tiny_components()
    adapter = perturbed_adapter(source.unet)
    adapter.image_encoder.save_pretrained(tmp_path / "image_encoder")
    state = adapter.state_dict()
    nested = {group: {key.removeprefix(group + "."): value for key, value in state.items() if key.startswith(group + ".")}
              for group in ("image_proj", "ip_adapter")}
    torch.save(nested, tmp_path / "ip-adapter_sd15.bin")
    target = build_tiny_components()
    loaded = load_image_adapter(tmp_path, target.unet)
    embeds = adapter.embed(IMAGES)
    torch.testing.assert_close(unet_output(target.unet, embeds), unet_output(source.unet, embeds), rtol=0, atol=1e-6)
    assert torch.equal(loaded.embed(IMAGES), embeds)


def test_adapter_for_another_base_or_without_encoder_is_a_clear_error(tmp_path: Path) -> None:
    perturbed_adapter(build_tiny_components().unet).save(tmp_path)
    wider = build_tiny_components(cross_attention_dim=32)
    with pytest.raises(UserError, match="shape"):
        load_image_adapter(tmp_path, wider.unet)
    for file in (tmp_path / "image_encoder").iterdir():
        file.unlink()
    with pytest.raises(UserError, match="image_encoder"):
        load_image_adapter(tmp_path, build_tiny_components().unet)


def test_image_adapter_task_trains_only_the_adapter(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_random_photos(photos, 4, (36, 40), ".jpg")
    cfg = ImageAdapterConfig(model=ModelConfig(base="tiny"), data=ImageFolderConfig(roots=[str(photos)], resolution=(32, 32)),
                             train=TrainConfig(max_steps=2, batch_size=2, lr=1e-2, checkpoint_every=2, sample_every=2),
                             sample=ImageAdapterSampleConfig(count=2, steps=2))
    task = ImageAdapterTask(cfg, components=build_tiny_components())
    unet_before = {name: p.detach().clone() for name, p in task.components.unet.named_parameters()
                   if "encoder_hid_proj" not in name}
    adapter_before = {name: p.detach().clone() for name, p in task.adapter.parameters().items()}
    train(task, cfg.train, tmp_path / "run", config=cfg)
    unet_after = dict(task.components.unet.named_parameters())
    assert all(torch.equal(value, unet_after[name]) for name, value in unet_before.items()
               if not any(part in name for part in ("to_k_ip", "to_v_ip")))
    assert any(not torch.equal(value, task.adapter.parameters()[name]) for name, value in adapter_before.items())
    final = tmp_path / "run" / "final"
    assert (final / "ip-adapter.safetensors").is_file() and (tmp_path / "run" / "samples" / "step-0000002.png").is_file()
    reloaded = load_image_adapter(final, build_tiny_components().unet)
    assert all(torch.equal(value, task.adapter.parameters()[name].detach()) for name, value in reloaded.state_dict().items())
