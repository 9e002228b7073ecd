"""Training speed features (atelier.training.loop) give the results of the plain path (tiny models, CPU).

Tolerances, and why:
- fused AdamW against the foreach AdamW, 20 steps on the same gradients: 1e-6 absolute on weights of size ~0.1-1
  (the kernels differ only in rounding; measured 3e-8);
- gradient checkpointing: the loss is bit-identical (the forward is the same) and gradients within 1e-6 (the
  recomputed forward runs the same kernels; measured equal);
- channels-last: loss and gradients within 1e-5 (convolutions in NHWC order sum in another order);
- torch.compile: a counting backend (which runs the captured graph as is) gives identical results; inductor on the
  tiny UNet (fusions reorder arithmetic) within 1e-4 of the loss, opt-in with ATELIER_SLOW_TESTS=1 because compiling
  the UNet's forward and backward takes minutes on a CPU;
- cached encoders: the cached VAE posteriors and caption embeddings equal encoding the batch now within 1e-6.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from test_style_lora import style_config, write_style_folder

from atelier.config import TrainConfig
from atelier.diffusion.components import build_tiny_components
from atelier.diffusion.lora import add_lora
from atelier.methods.style.train import StyleLoraTask
from atelier.training.loop import compile_for_training, make_optimizer, prepare_step_modules, train

SLOW = os.environ.get("ATELIER_SLOW_TESTS", "") not in ("", "0")


@pytest.fixture(scope="module")
def style_root(tmp_path_factory) -> Path:
    return write_style_folder(tmp_path_factory.mktemp("style") / "data")


def loss_and_grads(task: StyleLoraTask, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training loss on a fixed batch and the LoRA gradients it gives."""
    loss = task.training_loss(torch.arange(4), torch.Generator().manual_seed(seed), 0)
    loss.backward()
    return loss.detach(), {name: param.grad.clone() for name, param in task.trainable_state_dict().items()}


def test_fused_adamw_matches_the_foreach_one_after_20_steps() -> None:
    components = build_tiny_components()
    components.unet.requires_grad_(False)
    fused_params = add_lora(components.unet, 8, 16.0, 0.0, ["to_q", "to_k", "to_v", "to_out.0", "conv1"])
    plain_params = [param.detach().clone().requires_grad_(True) for param in fused_params]
    initial = [param.detach().clone() for param in fused_params]
    fused = make_optimizer(TrainConfig(lr=1e-3), fused_params)
    plain = make_optimizer(TrainConfig(lr=1e-3, fused_optimizer=False), plain_params)
    assert fused.defaults["fused"] and not plain.defaults["fused"]  # on by default on CPU, off when asked
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        for a, b in zip(fused_params, plain_params):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        fused.step()
        plain.step()
    assert max(float((a.detach() - b).abs().max()) for a, b in zip(fused_params, initial)) > 1e-2  # the weights moved...
    for a, b in zip(fused_params, plain_params):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-6)  # ...the same way


def test_the_loop_checkpoints_a_fused_optimizer(style_root: Path, tmp_path: Path) -> None:
    cfg = style_config(style_root, max_steps=1, checkpoint_every=1)
    train(StyleLoraTask(cfg, components=build_tiny_components()), cfg.train, tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "step-0000001" / "optimizer.pt", weights_only=True)
    assert state["param_groups"][0]["fused"] is True


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(style_root: Path) -> None:
    plain = StyleLoraTask(style_config(style_root), components=build_tiny_components())
    cfg = style_config(style_root, gradient_checkpointing=True)
    checkpointed = StyleLoraTask(cfg, components=build_tiny_components())
    prepare_step_modules(checkpointed, cfg.train)
    assert checkpointed.components.unet.is_gradient_checkpointing and not plain.components.unet.is_gradient_checkpointing
    loss, grads = loss_and_grads(plain)
    loss_checkpointed, grads_checkpointed = loss_and_grads(checkpointed)
    assert torch.equal(loss, loss_checkpointed)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_checkpointed[name], grad, rtol=0, atol=1e-6)


def test_channels_last_gives_the_same_loss_and_gradients(style_root: Path) -> None:
    plain = StyleLoraTask(style_config(style_root), components=build_tiny_components())
    cfg = style_config(style_root, channels_last=True)
    nhwc = StyleLoraTask(cfg, components=build_tiny_components())
    prepare_step_modules(nhwc, cfg.train)
    assert nhwc.components.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    loss, grads = loss_and_grads(plain)
    loss_nhwc, grads_nhwc = loss_and_grads(nhwc)
    torch.testing.assert_close(loss_nhwc, loss, rtol=0, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_nhwc[name], grad, rtol=0, atol=1e-5)


class Block(torch.nn.Module):
    """A small convolutional block (what a UNet is made of) for the compile tests."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.norm = torch.nn.GroupNorm(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(self.norm(self.conv(x)))


def test_compile_runs_the_training_forward_through_the_compiler_and_sampling_eagerly() -> None:
    graphs = []

    def counting(graph_module: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(graph_module)
        return graph_module.forward  # run the captured graph as it is

    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    plain, compiled = Block(), Block()
    assert compile_for_training(compiled, backend=counting)
    expected = plain(x)
    expected.square().mean().backward()
    out = compiled(x)
    out.square().mean().backward()
    assert torch.equal(out, expected) and torch.equal(compiled.conv.weight.grad, plain.conv.weight.grad)
    compiled(x)
    assert len(graphs) == 2  # the probe's graph and the module's, compiled once
    compiled.eval()
    with torch.no_grad():
        assert torch.equal(compiled(x), plain.eval()(x))
    assert len(graphs) == 2  # sampling (eval, no grad) ran eagerly
    assert compile_for_training(compiled, backend=counting) and len(graphs) == 2  # compiling twice is a no-op


def test_compile_falls_back_to_eager_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    def no_compiler(graph_module: torch.fx.GraphModule, example_inputs: list) -> object:
        raise RuntimeError("no C++ compiler found")

    def fails_on_images(graph_module: torch.fx.GraphModule, example_inputs: list) -> object:
        if any(getattr(value, "dim", lambda: 0)() == 4 for value in example_inputs):
            raise RuntimeError("cannot compile convolutions")
        return graph_module.forward

    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = Block()(x)
    with caplog.at_level(logging.WARNING, logger="atelier.training.loop"):
        broken = Block()
        assert not compile_for_training(broken, backend=no_compiler)  # the probe fails: never compiled
        assert torch.equal(broken(x), expected)
        failing = Block()
        assert compile_for_training(failing, backend=fails_on_images)  # the probe works, the module's compile fails
        assert torch.equal(failing(x), expected) and torch.equal(failing(x), expected)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2 and all("training runs eagerly" in message for message in warnings)
    assert "no C++ compiler found" in warnings[0] and "cannot compile convolutions" in warnings[1]


@pytest.mark.skipif(not SLOW, reason="compiling the tiny UNet's forward and backward with inductor takes minutes on a "
                                     "CPU; set ATELIER_SLOW_TESTS=1 to run it")
def test_inductor_compiled_unet_trains_like_the_eager_one(style_root: Path, tmp_path: Path) -> None:
    results = {}
    for compile_unet in (False, True):
        cfg = style_config(style_root, max_steps=2, compile=compile_unet)
        results[compile_unet] = train(StyleLoraTask(cfg, components=build_tiny_components()), cfg.train,
                                      tmp_path / str(compile_unet))
    assert results[True].final_loss == pytest.approx(results[False].final_loss, rel=1e-4)


def test_cached_latents_and_text_equal_encoding_every_step(style_root: Path) -> None:
    """The cache (VAE posteriors and caption embeddings, encoded once) holds what per-step encoding would give."""
    from atelier.data.transforms import load_image_tensor
    from atelier.diffusion.encode import encode_images, encode_prompts

    task = StyleLoraTask(style_config(style_root))
    batch = torch.tensor([0, 3, task.num_examples() - 1])  # the last one is a flipped copy (flip=True)
    items = len(task.items)
    images = torch.stack([load_image_tensor(task.items[i % items].path, task.cfg.data.resolution, task.cfg.data.crop)
                          for i in batch.tolist()])
    images = torch.where((batch >= items).view(-1, 1, 1, 1), images.flip(-1), images)
    mean, std = encode_images(task.components.vae, images)
    latents = task.latents[batch]
    assert torch.allclose(latents.mean, mean, atol=1e-6) and torch.allclose(latents.std, std, atol=1e-6)
    rows = task.captions.index[batch]
    captions = [task.captions.distinct[i] for i in rows.tolist()]
    assert all(c.startswith("an illustration, ") for c in captions)
    text = encode_prompts(task.components.tokenizer, task.components.text_encoder, captions)
    assert torch.allclose(task.captions.text(rows, task.components.text_encoder), text, atol=1e-6)
