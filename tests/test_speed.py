"""Inference speed features (atelier.diffusion.speed): every fast path against the plain reference path (tiny models, CPU).

Tolerances, as a share of the largest reference value (sampled latents reach ~20 on the random tiny model):
- fp32 features that only reorder arithmetic (SDPA, fused QKV, channels-last, fused LoRA, compile): 1e-5 of one
  network call's output, 1e-5 of the latents after sampling (measured: ~2e-6);
- VAE slicing and the text cache run other batch sizes: 1e-5 as above; auto tiling below its size is bit for bit;
- forced VAE tiling blends tiles, an approximation: correlation with the untiled decode above 0.85 (measured 0.92);
- bf16 weights (CPU): 5e-2 after sampling (measured: ~2e-2, guidance 7.5 amplifies rounding).
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch

from atelier.commands.generate import add_speed_arguments, speed_from_args
from atelier.diffusion.components import build_tiny_components, freeze
from atelier.diffusion.encode import TEXT_CACHE_SIZE, encode_prompts
from atelier.diffusion.image_adapter import attach_image_adapter, tiny_image_encoder
from atelier.diffusion.img2img import translate
from atelier.diffusion.lora import (
    TEXT_ENCODER_TARGETS,
    UNET_TARGETS,
    add_lora,
    fuse_lora,
    lora_parameters,
    set_lora_scale,
)
from atelier.diffusion.speed import (
    SpeedConfig,
    apply_speed,
    apply_speed_to_vae,
    compile_module,
    compiler_error,
    set_attention,
)
from atelier.diffusion.text2img import generate
from atelier.errors import UserError

PLAIN = SpeedConfig.plain()
PROMPTS = ["a red striped dress", "a blue coat"]
FP32, BF16 = 1e-5, 5e-2


@pytest.fixture(autouse=True)
def one_thread():
    """Equal thread counts make plain and fast runs comparable; one thread keeps the shared test machine usable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(lora: bool = True):
    """The tiny model (seed 0) with a visible random style LoRA on the UNet and the text encoder, frozen."""
    components = build_tiny_components()
    if lora:
        add_lora(components.unet, 4, 8.0, 0.0, UNET_TARGETS, adapter_name="style")
        add_lora(components.text_encoder, 4, 8.0, 0.0, TEXT_ENCODER_TARGETS, adapter_name="style")
        with torch.no_grad():
            for model in (components.unet, components.text_encoder):
                for name, param in lora_parameters(model).items():
                    param.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    freeze(components.unet, components.vae, components.text_encoder)
    return components


def sample(speed: SpeedConfig, components=None) -> torch.Tensor:
    """Latents of a short guided text2img run with `speed` applied."""
    components = apply_speed(components or tiny(), speed, "cpu")
    return generate(components, PROMPTS, size_hw=(32, 32), steps=4, seed=1, show_progress=False).latents


def assert_close(fast: torch.Tensor, reference: torch.Tensor, share: float) -> None:
    torch.testing.assert_close(fast.float(), reference, rtol=0, atol=share * reference.abs().max().item())


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    return sample(PLAIN)


FEATURES = {
    "sdpa": dict(sdpa=True),
    "fuse_qkv": dict(sdpa=True, fuse_qkv=True, fuse_lora=True),
    "fuse_lora": dict(fuse_lora=True),
    "channels_last": dict(channels_last=True),
    "cache_text": dict(cache_text=True),
}  # the VAE's slicing and tiling do not touch the latents: test_vae_slicing_and_tiling


@pytest.mark.parametrize("feature", list(FEATURES))
def test_each_fp32_feature_matches_the_plain_path(feature: str, reference: torch.Tensor) -> None:
    assert_close(sample(dataclasses.replace(PLAIN, **FEATURES[feature])), reference, FP32)


def test_the_default_fast_path_matches_and_bf16_is_close(reference: torch.Tensor) -> None:
    assert SpeedConfig().torch_dtype("cpu") == torch.float32 and SpeedConfig().torch_dtype("cuda") == torch.bfloat16
    assert_close(sample(SpeedConfig()), reference, FP32)
    assert_close(sample(SpeedConfig(dtype="bf16")), reference, BF16)
    with pytest.raises(UserError, match="--dtype fp16"):
        SpeedConfig(dtype="fp16").torch_dtype("cpu")


def test_one_unet_call_matches_closely_and_fusion_skips_lora_wrappers() -> None:
    latents, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor(500)
    context = torch.randn(2, 77, 64, generator=torch.Generator().manual_seed(1))
    plain = apply_speed(tiny(), PLAIN, "cpu").unet
    with torch.no_grad():
        expected = plain(latents, t, context).sample
    unfused = tiny().unet
    counts = set_attention(unfused, sdpa=True, fuse_qkv=True)  # LoRA still wrapped: nothing may be fused
    assert counts == {"sdpa": 14}
    fast = apply_speed(tiny(), SpeedConfig(), "cpu").unet  # LoRA fused first, then every attention is fused
    assert not lora_parameters(fast) and all(type(module).__name__ == "FusedAttnProcessor2_0"
                                             for module in fast.attn_processors.values())
    with torch.no_grad():
        torch.testing.assert_close(fast(latents, t, context).sample, expected, rtol=0, atol=FP32)
        torch.testing.assert_close(unfused(latents, t, context).sample, expected, rtol=0, atol=FP32)


def test_image_adapter_keeps_its_processors_and_scale_through_both_paths() -> None:
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    settings = dict(strength=0.6, steps=6, guidance_scale=3.0, seed=3, show_progress=False)
    outputs = {}
    for name, speed in {"plain": PLAIN, "fast": SpeedConfig()}.items():
        components = tiny()
        adapter = attach_image_adapter(components.unet, tiny_image_encoder())
        with torch.no_grad():
            for param in adapter.parameters().values():
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())) * 0.2)
        names = set(adapter.parameters())
        apply_speed(components, speed, "cpu")
        kinds = {type(processor).__name__ for processor in components.unet.attn_processors.values()}
        assert kinds == ({"AttnProcessor", "IPAdapterAttnProcessor"} if name == "plain"
                         else {"FusedAttnProcessor2_0", "IPAdapterAttnProcessor2_0"})
        assert set(adapter.parameters()) == names  # the image k/v projections are found in either processor kind
        outputs[name] = translate(components, images, PROMPTS, image_adapter=adapter, image_cond_scale=0.8, **settings).latents
        off = translate(components, images, PROMPTS, image_adapter=adapter, image_cond_scale=0.0, **settings).latents
        assert (outputs[name] - off).abs().max() > 1e-3  # the scale still reaches the swapped processors
    assert_close(outputs["fast"], outputs["plain"], FP32)


def test_pose_model_keeps_cfld_query_bias_and_matches() -> None:
    from atelier.methods.cfld.model import PoseModel, PoseModelConfig, apply_speed_to_pose_model
    from atelier.methods.cfld.network import CFLD, tiny_cfld_config
    from atelier.methods.cfld.sample import transfer

    generator = torch.Generator().manual_seed(0)
    source, pose = torch.rand(2, 3, 64, 48, generator=generator) * 2 - 1, torch.rand(2, 21, 64, 48, generator=generator)
    results = {}
    for name, speed in {"plain": PLAIN, "fast": SpeedConfig()}.items():
        torch.manual_seed(0)
        components = build_tiny_components()
        cfld = CFLD(tiny_cfld_config(), components.unet, (64, 48)).eval()
        with torch.no_grad():
            for conv in cfld.hybrid_attention.zero_conv_outs:  # a trained-looking model: non-zero query biases
                conv.bias.fill_(0.5)
        config = PoseModelConfig(cfld=tiny_cfld_config(), image_size=(64, 48), appearance_size=(64, 48), pose_size=(64, 48))
        model = apply_speed_to_pose_model(PoseModel(cfld, components.vae, components.scheduler, config), speed, "cpu")
        kinds = {type(module.processor).__name__ for module in cfld.unet.modules() if hasattr(module, "processor")}
        assert "QueryBiasAttnProcessor" in kinds
        results[name] = transfer(model, source, pose, steps=4, show_progress=False).latents
    assert_close(results["fast"], results["plain"], FP32)


def test_illustrator_fuses_its_lora_weights_and_refuses_others() -> None:
    from atelier.methods.unidllora.model import Illustrator, apply_speed_to_illustrator
    from atelier.methods.unidllora.sample import illustrate
    from atelier.methods.unidllora.sketch import xdog_sketch
    from atelier.methods.unidllora.uni_adapter import UniAdapter
    from tests.helpers import randomised_dual_lora_model

    images = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    settings = dict(strength=0.7, steps=6, guidance_scale=5.0, seed=3, scheduler="ddpm", show_progress=False)
    weights = {"real": 0.3, "illustration": 1.0}
    results = {}
    for name, speed in {"plain": PLAIN, "fast": SpeedConfig()}.items():
        components, adapter = randomised_dual_lora_model()
        model = apply_speed_to_illustrator(Illustrator(components, UniAdapter(adapter, xdog_sketch)), speed, weights, "cpu")
        results[name] = illustrate(model, images, lora_weights=weights, **settings).latents
    assert_close(results["fast"], results["plain"], FP32)
    assert model.fused_lora_weights == weights
    with pytest.raises(UserError, match="fused in at load"):
        illustrate(model, images, lora_weights={"illustration": 1.0}, **settings)


class CountCalls:
    """Counts forward calls of a module (a forward hook) and the prompts they carried."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls, self.rows = 0, 0
        module.register_forward_hook(self)

    def __call__(self, module, args, output) -> None:
        self.calls += 1
        self.rows += args[0].shape[0]


def test_text_cache_reuses_prompts_and_forgets_changed_weights() -> None:
    components = tiny()
    tokenizer, encoder = components.tokenizer, components.text_encoder
    expected = encode_prompts(tokenizer, encoder, PROMPTS + PROMPTS[:1])  # uncached: the encoder is not opted in
    apply_speed(components, dataclasses.replace(PLAIN, cache_text=True), "cpu")
    counter = CountCalls(encoder)
    first = encode_prompts(tokenizer, encoder, PROMPTS + PROMPTS[:1])
    assert counter.rows == 2  # the repeated prompt is encoded once
    again = encode_prompts(tokenizer, encoder, PROMPTS[::-1])
    assert counter.rows == 2  # all cached
    torch.testing.assert_close(first, expected, rtol=0, atol=FP32)  # other batches of prompts: reordered float sums
    torch.testing.assert_close(again, expected[:2].flip(0), rtol=0, atol=FP32)

    set_lora_scale([encoder], 0.0, "style")  # new weights in effect: the cache must not answer
    unscaled = encode_prompts(tokenizer, encoder, PROMPTS)
    assert counter.rows == 4 and (unscaled - first[:2]).abs().max() > 1e-3
    set_lora_scale([encoder], 1.0, "style")
    fuse_lora([encoder])
    torch.testing.assert_close(encode_prompts(tokenizer, encoder, PROMPTS), expected[:2], rtol=0, atol=FP32)
    assert counter.rows == 6
    encoder.to(torch.bfloat16)  # the dtype is part of the key
    assert encode_prompts(tokenizer, encoder, PROMPTS).dtype == torch.bfloat16 and counter.rows == 8

    encoder.float()
    many = [f"prompt {index}" for index in range(TEXT_CACHE_SIZE + 1)]
    encode_prompts(tokenizer, encoder, many)  # the oldest entry (prompt 0) falls out of the bounded cache
    rows = counter.rows
    encode_prompts(tokenizer, encoder, many[-1:])
    assert counter.rows == rows
    encode_prompts(tokenizer, encoder, many[:1])
    assert counter.rows == rows + 1


def test_vae_slicing_and_tiling() -> None:
    latents = torch.randn(3, 4, 40, 40, generator=torch.Generator().manual_seed(0))  # 160 px: above the tiny tile (64)
    vae = apply_speed_to_vae(tiny(lora=False).vae, PLAIN, "cpu")
    with torch.no_grad():
        plain = vae.decode(latents).sample
        counter = CountCalls(vae.decoder)
        apply_speed_to_vae(vae, dataclasses.replace(PLAIN, vae_tiling=None), "cpu")  # auto: 160 px is below 1024
        torch.testing.assert_close(vae.decode(latents).sample, plain, rtol=0, atol=0)
        apply_speed_to_vae(vae, dataclasses.replace(PLAIN, vae_slicing=True), "cpu")
        assert_close(vae.decode(latents).sample, plain, FP32)  # batches of one: other convolution blocking
        assert counter.calls == 1 + 3  # one image at a time, none tiled
        apply_speed_to_vae(vae, dataclasses.replace(PLAIN, vae_tiling=True), "cpu")
        tiled = vae.decode(latents).sample
    assert tiled.shape == plain.shape and counter.calls > 4 + 1  # several tiles
    # blended tiles: the same picture, not the same numbers (the random tiny VAE sees past its 64 px tiles)
    assert torch.corrcoef(torch.stack([tiled.flatten(), plain.flatten()]))[0, 1] > 0.85


def test_compile_matches_eager_on_one_attention() -> None:
    from diffusers.models.attention_processor import Attention

    error = compiler_error("cpu")
    if error is not None:
        pytest.skip(f"torch.compile does not work on this machine: {error}")
    torch.manual_seed(0)
    attention = Attention(32, heads=4, dim_head=8).eval()
    tokens = torch.randn(2, 16, 32)
    with torch.no_grad():
        eager = attention(tokens)
        set_attention(attention, sdpa=True, fuse_qkv=True)
        assert compile_module(attention, "default", "cpu")
        torch.testing.assert_close(attention(tokens), eager, rtol=0, atol=FP32)


def parse_speed(argv: list[str], many: bool) -> SpeedConfig:
    parser = argparse.ArgumentParser()
    add_speed_arguments(parser, compile_default="on for folders")
    return speed_from_args(parser.parse_args(argv), many)


def test_speed_flags() -> None:
    assert parse_speed(["--plain"], many=True) == PLAIN
    assert parse_speed(["--plain", "--dtype", "fp32", "--no-compile"], many=True) == PLAIN  # agreeing flags are fine
    with pytest.raises(UserError, match="--plain .* drop --dtype and --compile"):
        parse_speed(["--plain", "--dtype", "bf16", "--compile"], many=False)
    fast = parse_speed(["--dtype", "bf16", "--vae-tiling", "off"], many=False)
    assert (fast.dtype, fast.vae_tiling, fast.compile, fast.sdpa) == ("bf16", False, False, True)
    assert parse_speed([], many=True).compile == torch.cuda.is_available()  # folder runs compile on CUDA only
    assert parse_speed(["--compile"], many=False).compile
