"""Style LoRA: diffusers-format interop, PEFT-format loading, train_strength, exact resume, bad input (tiny models, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.config import ModelConfig, TrainConfig
from atelier.diffusion.components import build_tiny_components
from atelier.diffusion.lora import LoraSettings, load_lora, lora_parameters
from atelier.errors import UserError
from atelier.methods.style.train import StyleLoraConfig, StyleLoraTask
from atelier.registry import load_config
from atelier.training.loop import train
from atelier.training.losses import DiffusionLossConfig
from atelier.training.tasks.text2img import CaptionedDataConfig, read_training_items

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COLOURS = ["red", "blue", "green", "yellow"]


def write_style_folder(root: Path, count: int = 4, size: tuple[int, int] = (40, 36)) -> Path:
    """A captioned folder: flat-colour 'illustrations' with .txt sidecars (the kohya layout)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"img{index}.png")
        (root / f"img{index}.txt").write_text(f"a woman wearing a {COLOURS[index % 4]} dress\n")
    return root


def style_config(root: Path, **train: object) -> StyleLoraConfig:
    """Attention projections as in the recipe, plus a convolution and a linear projection (any target must round-trip)."""
    return StyleLoraConfig(
        model=ModelConfig(base="tiny"),
        data=CaptionedDataConfig(root=str(root), caption_prefix="an illustration, ", resolution=(32, 32), flip=True),
        lora=LoraSettings(target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1", "proj_in"]),
        train=TrainConfig(**{"max_steps": 2, "batch_size": 2, "lr": 1e-2, "checkpoint_every": 2, "log_every": 1, **train}),
    )


def unet_output(unet: torch.nn.Module) -> torch.Tensor:
    """The UNet's prediction on fixed random latents and text embeddings."""
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    text = torch.randn(2, 77, 64, generator=generator)
    with torch.no_grad():
        return unet(latents, torch.tensor([10, 700]), text).sample


@pytest.fixture(scope="module")
def trained_lora(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("style")
    cfg = style_config(write_style_folder(root / "data"))
    train(StyleLoraTask(cfg, components=build_tiny_components()), cfg.train, root / "run", config=cfg)
    return root / "run" / "final"


def test_saved_lora_loads_through_diffusers_with_the_same_output(trained_lora: Path) -> None:
    from diffusers import StableDiffusionPipeline

    assert (trained_lora / "pytorch_lora_weights.safetensors").is_file()
    ours = build_tiny_components()
    load_lora(ours.unet, ours.text_encoder, trained_lora)
    theirs = build_tiny_components()
    pipe = StableDiffusionPipeline(vae=theirs.vae, text_encoder=theirs.text_encoder, tokenizer=theirs.tokenizer,
                                   unet=theirs.unet, scheduler=theirs.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.load_lora_weights(str(trained_lora))
    base = unet_output(build_tiny_components().unet)
    assert (unet_output(ours.unet) - base).abs().max() > 1e-4  # the LoRA changes the output...
    torch.testing.assert_close(unet_output(theirs.unet), unet_output(ours.unet), rtol=0, atol=1e-6)  # ...identically
    config = next(iter(pipe.unet.peft_config.values()))
    assert (config.r, config.lora_alpha) == (8, 16)  # alpha != rank survives through the file's metadata


def test_peft_adapter_folder_loads(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(build_tiny_components().unet, LoraConfig(r=4, lora_alpha=12, target_modules=["to_q", "to_v"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    model.save_pretrained(str(tmp_path))
    expected = unet_output(model)
    ours = build_tiny_components()
    load_lora(ours.unet, None, tmp_path)
    torch.testing.assert_close(unet_output(ours.unet), expected, rtol=0, atol=1e-6)


def test_train_strength_bounds_timesteps(tmp_path: Path) -> None:
    cfg = style_config(write_style_folder(tmp_path / "data"))
    cfg.loss = DiffusionLossConfig(train_strength=0.25)
    task = StyleLoraTask(cfg, components=build_tiny_components())
    seen: list[torch.Tensor] = []
    task.components.unet.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(8):
            task.training_loss(torch.arange(8), generator, 0)
    timesteps = torch.cat(seen)
    assert timesteps.max() < 250 and timesteps.min() >= 0
    assert timesteps.max() > 150  # the whole allowed range is used


def test_only_lora_weights_train(tmp_path: Path) -> None:
    cfg = style_config(write_style_folder(tmp_path / "data"))
    task = StyleLoraTask(cfg, components=build_tiny_components())
    names = set(task.trainable_state_dict())
    assert names and all(".lora_" in name and name.startswith("unet.") for name in names)
    assert sum(p.numel() for p in task.trainable_parameters()) < 0.2 * sum(p.numel() for p in task.components.unet.parameters())


def test_resume_is_exact_with_random_crop_and_text_encoder_lora(tmp_path: Path) -> None:
    cfg = style_config(write_style_folder(tmp_path / "data"), max_steps=4, gradient_accumulation=2)
    cfg.data.crop = "random"
    cfg.lora.text_encoder = True
    cfg.lora.dropout = 0.1  # dropout draws from the global RNG: seeded per step by the loop

    def run(folder: Path, stop_after: int | None = None, resume: bool = False) -> dict[str, torch.Tensor]:
        task = StyleLoraTask(cfg, components=build_tiny_components())
        train(task, cfg.train, folder, resume=resume, stop_after=stop_after, config=cfg)
        return {name: value.detach().clone() for name, value in task.trainable_state_dict().items()}

    straight = run(tmp_path / "straight")
    run(tmp_path / "killed", stop_after=2)
    resumed = run(tmp_path / "killed", resume=True)
    assert any(name.startswith("text_encoder.") for name in straight)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    assert (tmp_path / "killed" / "final" / "pytorch_lora_weights.safetensors").is_file()


def test_captions_file_naming_a_missing_image_fails_clearly(tmp_path: Path) -> None:
    root = write_style_folder(tmp_path / "data")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "gone.png", "text": "a dress"}) + "\n")
    with pytest.raises(UserError, match="gone.png"):
        read_training_items(CaptionedDataConfig(root=str(root)))


def test_images_without_captions_fail_clearly(tmp_path: Path) -> None:
    root = write_style_folder(tmp_path / "data")
    (root / "img1.txt").unlink()
    with pytest.raises(UserError, match="img1.png"):
        read_training_items(CaptionedDataConfig(root=str(root)))


def test_shipped_configs_load_as_typed_configs() -> None:
    recipe = load_config(CONFIGS / "style-lora.yaml")
    assert isinstance(recipe, StyleLoraConfig)
    assert (recipe.lora.rank, recipe.lora.alpha, recipe.lora.dropout) == (8, 16.0, 0.0)
    assert recipe.lora.target_modules == ["to_q", "to_k", "to_v", "to_out.0"]
    assert isinstance(load_config(CONFIGS / "tiny-style-lora.yaml", ["train.max_steps=3"]), StyleLoraConfig)
    with pytest.raises(UserError, match="lora.rnk"):
        load_config(CONFIGS / "style-lora.yaml", ["lora.rnk=4"])


def test_lora_parameters_start_at_zero_effect() -> None:
    from atelier.diffusion.lora import add_lora

    components = build_tiny_components()
    before = unet_output(components.unet)
    params = add_lora(components.unet, 8, 16.0, 0.0, ["to_q", "to_k", "to_v", "to_out.0"])
    assert params and len(params) == len(lora_parameters(components.unet))
    torch.testing.assert_close(unet_output(components.unet), before, rtol=0, atol=0)


def test_tiny_configs_are_the_demos() -> None:
    from atelier.config import to_dict
    from atelier.demo.context import DemoContext
    from atelier.demo.style import style_config

    out = Path("runs/demo")
    lora = style_config(DemoContext(out=out), out / "data", Path("fashionsynth"))
    assert to_dict(load_config(CONFIGS / "tiny-style-lora.yaml")) == to_dict(lora)
    adapter = load_config(CONFIGS / "tiny-image-adapter.yaml")  # not in the demo: same base, size and demo data
    assert (adapter.model.base, adapter.data.resolution) == (lora.model.base, lora.data.resolution)
    assert adapter.data.roots == [str(out / "data" / "deepfashion" / "train_highres")]
