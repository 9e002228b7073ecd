"""Uni-adapter residuals, the dual LoRA (weights, save/load), the released-checkpoint conversion and the dual-lora
training task (alternation, exact resume) on tiny models, CPU."""

from __future__ import annotations

import copy

import pytest
import torch

from atelier.config import ModelConfig, TrainConfig
from atelier.diffusion.components import build_tiny_components, freeze
from atelier.diffusion.lora import LoraSettings, read_lora
from atelier.errors import UserError
from atelier.methods.unidllora.dual_lora import (
    add_dual_lora,
    domain_parameters,
    load_dual_lora,
    save_dual_lora,
    set_domain_weights,
)
from atelier.methods.unidllora.release import convert_released_checkpoint, load_released_duallora
from atelier.methods.unidllora.sketch import xdog_sketch
from atelier.methods.unidllora.train import DualLoraConfig, DualLoraTask, PairedDataConfig, read_pairs
from atelier.methods.unidllora.uni_adapter import UniAdapter, UniAdapterSettings, build_uni_adapter, check_fits
from atelier.training.loop import train

SETTINGS = LoraSettings(rank=4, alpha=8.0)


@pytest.fixture(scope="module")
def base():
    components = build_tiny_components()
    freeze(components.unet, components.vae, components.text_encoder)
    return components


def unet_output(unet: torch.nn.Module, **kwargs) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 16, 12, generator=generator)
    text = torch.randn(2, 77, 64, generator=generator)
    with torch.no_grad():
        return unet(latents, torch.tensor([10, 700]), text, **kwargs).sample


def randomise(unet: torch.nn.Module) -> None:
    """Give the (zero-initialised) LoRA B matrices values so the adapters change the output."""
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if ".lora_B." in name:
                param.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))


def test_adapter_features_fit_the_unet_down_blocks(base) -> None:
    adapter = build_uni_adapter(base.unet, base.latent_scale, num_res_blocks=1)
    uni = UniAdapter(adapter, xdog_sketch)
    rgb, sketch = uni.inputs(torch.rand(2, 3, 64, 48) * 2 - 1)
    assert rgb.shape == (2, 3, 64, 48) and sketch.shape == (2, 1, 64, 48)
    features = uni.features(rgb, sketch, [0.5, 0.5])
    assert [tuple(f.shape) for f in features] == [(2, 32, 16, 12), (2, 32, 8, 6), (2, 64, 4, 3)]
    parts = [member(x) for member, x in zip(adapter.adapters, (rgb, sketch))]
    for feature, from_rgb, from_sketch in zip(uni.features(rgb, sketch, [0.3, 1.2]), *parts):
        torch.testing.assert_close(feature, 0.3 * from_rgb + 1.2 * from_sketch)
    changed = unet_output(base.unet, down_intrablock_additional_residuals=list(features))
    assert (changed - unet_output(base.unet)).abs().max() > 1e-4  # the residuals reach the UNet
    with pytest.raises(UserError, match="multiples of 16"):
        uni.features(rgb[..., :40], sketch[..., :40], [0.5, 0.5])
    with pytest.raises(UserError, match="downscale"):
        check_fits(build_uni_adapter(base.unet, latent_scale=8), base.unet, base.latent_scale)


def test_domain_weights_switch_the_lora_and_zero_is_the_base(base, tmp_path) -> None:
    unet = copy.deepcopy(base.unet)
    add_dual_lora(unet, SETTINGS)
    randomise(unet)
    outputs = {}
    for name, weights in {"real": {"real": 1.0}, "illustration": {"illustration": 1.0}, "off": {"real": 0.0, "illustration": 0.0},
                          "both": {"real": 1.0, "illustration": 1.0}}.items():
        set_domain_weights(unet, weights)
        outputs[name] = unet_output(unet)
    torch.testing.assert_close(outputs["off"], unet_output(base.unet), rtol=0, atol=0)
    assert (outputs["real"] - outputs["illustration"]).abs().max() > 1e-3
    assert (outputs["both"] - outputs["illustration"]).abs().max() > 1e-3
    set_domain_weights(unet, {"illustration": 1.0})
    save_dual_lora(tmp_path / "lora", unet)
    state, _, _ = read_lora(tmp_path / "lora" / "illustration")
    assert all(key.startswith("unet.") and (".lora_A." in key or ".lora_B." in key) for key in state)  # unet-prefixed LoRA keys (diffusers reads them back as PEFT A/B)
    reloaded = copy.deepcopy(base.unet)
    assert load_dual_lora(reloaded, tmp_path / "lora", {"illustration": 1.0}) == ["real", "illustration"]
    torch.testing.assert_close(unet_output(reloaded), outputs["illustration"])
    with pytest.raises(UserError, match="unknown domain"):
        set_domain_weights(unet, {"photo": 1.0})


def released_projections(unet: torch.nn.Module) -> list[torch.nn.Linear]:
    """to_q, to_k, to_v, to_out[0] of each attention module in attn_processors order: the released code's walk."""
    linears = []
    for processor in unet.attn_processors:
        attention = unet.get_submodule(processor.removesuffix(".processor"))
        linears += [attention.to_q, attention.to_k, attention.to_v, attention.to_out[0]]
    return linears


def write_released_duallora(path, unet: torch.nn.Module, rank: int = 4) -> dict[str, list]:
    """duallora.bin as the released code reads it; returns {domain: [(projection, LoRALinearLayer), ...]}."""
    from diffusers.models.lora import LoRALinearLayer

    linears, entries, layers = released_projections(unet), {}, {}
    for domain, key, alpha in (("illustration", "unet_custom.illu_lora_parameter", 8.0), ("real", "unet_custom.real_lora_parameter", None)):
        modules = torch.nn.ModuleList(LoRALinearLayer(linear.in_features, linear.out_features, rank=rank, network_alpha=alpha)
                                      for linear in linears)
        for module in modules:
            torch.nn.init.normal_(module.up.weight, std=0.1)  # released layers start with up = 0: make them act
        entries[key], layers[domain] = modules, list(zip(linears, modules))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(entries, path)
    return layers


def test_released_dual_lora_converts_to_the_same_function(base, tmp_path) -> None:
    released = tmp_path / "released"
    merged = copy.deepcopy(base.unet)  # the expected function: W + alpha / r * up @ down, merged by hand
    layers = write_released_duallora(released / "custom_duallora" / "duallora.bin", merged)
    with torch.no_grad():
        for linear, layer in layers["illustration"]:
            linear.weight += (8.0 / 4) * layer.up.weight @ layer.down.weight
    converted = copy.deepcopy(base.unet)
    load_released_duallora(converted, released)
    set_domain_weights(converted, {"illustration": 1.0})
    torch.testing.assert_close(unet_output(converted), unet_output(merged), rtol=1e-4, atol=1e-5)
    assert len(domain_parameters(converted, "real")) == 2 * 4 * len(base.unet.attn_processors)
    build_uni_adapter(base.unet, base.latent_scale, 1).save_pretrained(str(released / "adapter"))
    convert_released_checkpoint(released, tmp_path / "ours", copy.deepcopy(base.unet))
    assert (tmp_path / "ours" / "adapter_1" / "config.json").is_file()
    reloaded = copy.deepcopy(base.unet)
    load_dual_lora(reloaded, tmp_path / "ours" / "lora", {"illustration": 1.0})
    torch.testing.assert_close(unet_output(reloaded), unet_output(merged), rtol=1e-4, atol=1e-5)


def test_released_checkpoint_bad_input_is_a_clear_error(base, tmp_path) -> None:
    with pytest.raises(UserError, match="custom_duallora"):
        load_released_duallora(copy.deepcopy(base.unet), tmp_path)
    other = build_tiny_components(cross_attention_dim=32).unet
    write_released_duallora(tmp_path / "custom_duallora" / "duallora.bin", other)
    with pytest.raises(UserError, match="needs"):  # same count of projections, other shapes
        load_released_duallora(copy.deepcopy(base.unet), tmp_path)
    torch.save({"unet_custom.illu_lora_parameter": []}, tmp_path / "custom_duallora" / "duallora.bin")
    with pytest.raises(UserError, match="real_lora_parameter"):
        load_released_duallora(copy.deepcopy(base.unet), tmp_path)
    (tmp_path / "custom_duallora" / "duallora.bin").write_bytes(b"\x80\x04garbage")
    with pytest.raises(UserError, match="could not be read"):
        load_released_duallora(copy.deepcopy(base.unet), tmp_path)


def dual_config(synth_root, **train: object) -> DualLoraConfig:
    style = synth_root / "style"
    return DualLoraConfig(
        model=ModelConfig(base="tiny"),
        data=PairedDataConfig(real_root=str(style / "photo"), illustration_root=str(style / "illustration"),
                              list_file=str(style / "train.lst"), resolution=(48, 32), max_images=4),
        lora=SETTINGS, adapter=UniAdapterSettings(num_res_blocks=1),
        train=TrainConfig(**{"max_steps": 4, "batch_size": 2, "lr": 1e-2, "checkpoint_every": 2, "log_every": 1, **train}),
    )


def test_training_alternates_domains_and_resumes_exactly(synth_root, tmp_path) -> None:
    cfg = dual_config(synth_root)
    task = DualLoraTask(cfg, components=build_tiny_components())
    before = {domain: {k: v.detach().clone() for k, v in domain_parameters(task.components.unet, domain).items()} for domain in ("real", "illustration")}
    adapter_before = [p.detach().clone() for p in task.uni.adapter.parameters()]
    train(task, cfg.train, tmp_path / "one", stop_after=1, config=cfg)  # step 1 trains the illustration domain
    after = {domain: domain_parameters(task.components.unet, domain) for domain in before}
    assert all(torch.equal(v, before["real"][k]) for k, v in after["real"].items())
    assert any(not torch.equal(v, before["illustration"][k]) for k, v in after["illustration"].items())
    assert any(not torch.equal(p, q) for p, q in zip(task.uni.adapter.parameters(), adapter_before))
    assert [task.domain_at(step) for step in range(3)] == ["illustration", "real", "illustration"]
    assert not any("schedule" in name for name in task.trainable_state_dict())  # the step comes from the loop

    straight = DualLoraTask(cfg, components=build_tiny_components())
    train(straight, cfg.train, tmp_path / "straight", config=cfg)
    interrupted = DualLoraTask(cfg, components=build_tiny_components())
    train(interrupted, cfg.train, tmp_path / "resumed", stop_after=2, config=cfg)
    resumed = DualLoraTask(cfg, components=build_tiny_components())
    train(resumed, cfg.train, tmp_path / "resumed", resume=True, config=cfg)
    for name, value in straight.trainable_state_dict().items():
        torch.testing.assert_close(resumed.trainable_state_dict()[name], value, rtol=0, atol=0, msg=name)
    final = tmp_path / "resumed" / "final"
    for part in ("lora/real/pytorch_lora_weights.safetensors", "lora/illustration/pytorch_lora_weights.safetensors",
                 "adapter/config.json", "adapter_1/config.json", "sketch.json", "config.yaml"):
        assert (final / part).is_file(), part


def test_paired_folders_must_match(synth_root, tmp_path) -> None:
    import shutil

    style = synth_root / "style"
    shutil.copytree(style / "illustration", tmp_path / "drawn")
    missing = sorted((tmp_path / "drawn").glob("*.jpg"))[0]
    missing.unlink()
    data = PairedDataConfig(real_root=str(style / "photo"), illustration_root=str(tmp_path / "drawn"))
    with pytest.raises(UserError, match=missing.stem):
        read_pairs(data)
    with pytest.raises(UserError, match="data.illustration_root"):
        read_pairs(PairedDataConfig(real_root=str(style / "photo"), illustration_root=str(tmp_path / "none")))
    with pytest.raises(UserError, match="domain_order"):
        DualLoraTask(DualLoraConfig(domain_order=["photo"]))
