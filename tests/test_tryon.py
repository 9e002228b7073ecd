"""The try-on network (methods.tryon): its input widening, zero start, garment encoder, training, save/load and commands."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from atelier.data.synth import write_tryon
from atelier.diffusion.components import build_tiny_components
from atelier.methods.tryon.network import IN_CHANNELS, TryOnNet, TryOnNetConfig, widen_conv_in
from tests.helpers import cli_outcome

SIZE_HW = (64, 48)


@pytest.fixture(scope="module")
def tryon_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tryon") / "data"
    write_tryon(root, identities=16, size=(SIZE_HW[1], SIZE_HW[0]), seed=0, test_fraction=0.3)
    return root


def _config(root, task: str, garment_input: str = "noisy", steps: int = 2):
    from atelier.registry import config_from_dict

    return config_from_dict({
        "task": task, "model": {"base": "tiny"}, "net": {"attention_head_dim": 8, "garment_input": garment_input},
        "data": {"root": str(root), "image_size": list(SIZE_HW), "cache": True},
        "train": {"max_steps": steps, "batch_size": 2, "mixed_precision": "no", "gradient_checkpointing": False,
                  "checkpoint_every": 1, "log_every": 1, "sample_every": steps},
        "sample": {"count": 2, "steps": 2},
    })  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tryon_data):
    """One tiny run per task (2 steps): {task: run folder}."""
    from atelier.registry import build_task
    from atelier.training.loop import train

    runs = {}
    for task, garment_input in (("tryon", "noisy"), ("garment-design", "garment")):
        cfg = _config(tryon_data, task, garment_input)
        runs[task] = tmp_path_factory.mktemp(task) / "run"
        train(build_task(cfg), cfg.train, runs[task], config=cfg)
    return runs


@pytest.mark.parametrize("base_channels", [4, 9])
def test_widen_conv_in_maps_the_base_channels_and_zeroes_the_rest(base_channels):
    unet = build_tiny_components().unet
    if base_channels == 9:  # an inpainting base: noisy 0-3, mask 4, masked image 5-8
        old = unet.conv_in
        unet.conv_in = torch.nn.Conv2d(9, old.out_channels, 3, padding=1)
    old = unet.conv_in.weight.detach().clone()
    widen_conv_in(unet)
    new = unet.conv_in.weight.detach()
    assert new.shape[1] == IN_CHANNELS and unet.config.in_channels == IN_CHANNELS
    assert torch.equal(new[:, :4], old[:, :4])
    if base_channels == 9:
        assert torch.equal(new[:, 4:8], old[:, 5:9]) and torch.equal(new[:, 8], old[:, 4])
        assert not new[:, 9:].any()
    else:
        assert not new[:, 4:].any()


@pytest.mark.parametrize("garment_input", ["noisy", "garment"])
def test_the_network_starts_as_its_base(garment_input):
    """Zero input weights, zero hint convolution and zero output projections: step 0 is the base model exactly."""
    unet = build_tiny_components().unet
    latents, context, t = torch.randn(2, 4, 16, 12), torch.randn(2, 77, 64), torch.tensor([10, 700])
    with torch.no_grad():
        expected = unet(latents, t, context).sample
        net = TryOnNet(TryOnNetConfig(garment_input=garment_input, attention_head_dim=8), unet)
        sample = torch.cat([latents, torch.randn(2, 9, 16, 12)], dim=1)
        garment = net.encode_control(torch.randn(2, 4, 16, 12), context, t, sample)
        got = net(sample, t, context, garment).sample
    assert torch.equal(got, expected)
    assert sorted(garment) == [(4, 3), (8, 6), (16, 12)]


def test_the_garment_encoder_reads_the_step_only_with_noisy_input():
    torch.manual_seed(0)
    control, context, sample = torch.randn(1, 4, 16, 12), torch.randn(1, 77, 64), torch.randn(1, 13, 16, 12)
    with torch.no_grad():
        fixed = TryOnNet(TryOnNetConfig(garment_input="garment", attention_head_dim=8), build_tiny_components().unet)
        a, b = (fixed.encode_control(control, context, torch.tensor([t]), sample)[(16, 12)] for t in (10, 900))
        assert torch.equal(a, b)  # "garment": the same features at every step, so sampling computes them once
        noisy = TryOnNet(TryOnNetConfig(garment_input="noisy", attention_head_dim=8), build_tiny_components().unet)
        a, b = (noisy.encode_control(control, context, torch.tensor([t]), sample)[(16, 12)] for t in (10, 900))
        assert not torch.allclose(a, b)
        with pytest.raises(ValueError, match="unet_input"):
            noisy.encode_control(control, context, torch.tensor([10]))


def test_garment_features_reach_the_decoder_once_the_projection_is_not_zero():
    net = TryOnNet(TryOnNetConfig(garment_input="garment", attention_head_dim=8), build_tiny_components().unet)
    for cross in net.cross_attention:
        torch.nn.init.normal_(cross.to_out.weight, std=0.1)
    sample, context, t = torch.randn(1, 13, 16, 12), torch.randn(1, 77, 64), torch.tensor([500])
    with torch.no_grad():
        red, blue = (net(sample, t, context, net.encode_control(torch.full((1, 4, 16, 12), v), context)).sample for v in (1.0, -1.0))
        plain = net(sample, t, context, None).sample
    assert not torch.allclose(red, blue) and not torch.allclose(red, plain)


def test_training_saves_a_model_that_reloads_to_the_same_images(trained, tryon_data):
    from atelier.data.formats.vitonhd import load_vitonhd
    from atelier.methods.tryon.data import TryOnExamples, stack
    from atelier.methods.tryon.model import load_tryon_model, read_model_config
    from atelier.methods.tryon.sample import generate

    for task, mode in (("tryon", "tryon"), ("garment-design", "design")):
        run = trained[task]
        assert (run / "final" / "tryon.safetensors").is_file() and list((run / "samples").glob("*.png"))
        assert read_model_config(run).mode == mode
        model = load_tryon_model(run, device="cpu")
        examples = TryOnExamples(load_vitonhd(tryon_data, "test"), SIZE_HW, mode, "unpaired")
        items = [examples[i] for i in range(2)]
        batch = stack(items)
        args = (batch["agnostic"], batch["mask"], batch["densepose"], batch["control"], [it.caption for it in items])
        first = generate(model, *args, steps=2, guidance_scale=2.0, seed=3, show_progress=False)
        again = generate(load_tryon_model(run, device="cpu"), *args, steps=2, guidance_scale=2.0, seed=3, show_progress=False)
        assert [np.asarray(a).tolist() for a in first] == [np.asarray(b).tolist() for b in again]
        if mode == "design":
            assert all(it.caption for it in items)  # MGD's noun phrases, joined
        one = generate(model, *(x[1:] for x in args[:4]), args[4][1:], steps=2, guidance_scale=2.0, seed=4, show_progress=False)
        # pair i's image depends on its seed alone (up to float rounding: another batch size sums in another order)
        gap = np.abs(np.asarray(one[0], dtype=int) - np.asarray(first[1], dtype=int))
        assert gap.max() <= 3 and gap.mean() < 0.5


def test_training_resumes_exactly(tmp_path, tryon_data):
    from atelier.registry import build_task
    from atelier.training.loop import train
    from atelier.weights import load_state_dict

    cfg = _config(tryon_data, "garment-design", "noisy", steps=3)
    train(build_task(cfg), cfg.train, tmp_path / "whole", config=cfg)
    cfg.train.max_steps = 2
    train(build_task(cfg), cfg.train, tmp_path / "split", config=cfg)
    cfg.train.max_steps = 3
    train(build_task(cfg), cfg.train, tmp_path / "split", config=cfg, resume=True)
    whole = load_state_dict(tmp_path / "whole" / "final" / "tryon.safetensors")
    split = load_state_dict(tmp_path / "split" / "final" / "tryon.safetensors")
    assert all(torch.equal(whole[k], split[k]) for k in whole)


def test_try_on_and_design_commands(trained, tryon_data, tmp_path):
    code, output = cli_outcome(["try-on", "--checkpoint", str(trained["tryon"]), "--test-set", str(tryon_data),
                                "--setting", "paired", "--steps", "2", "--out", str(tmp_path / "paired")])
    assert code == 0, output
    people = sorted(p.stem for p in (tryon_data / "test" / "image").glob("*.jpg"))
    assert sorted(p.stem for p in (tmp_path / "paired").glob("*.png")) == people
    assert "--protocol vitonhd" in output
    person = tryon_data / "test" / "image" / f"{people[0]}.jpg"
    code, output = cli_outcome(["design", "--checkpoint", str(trained["garment-design"]), "--person", str(person),
                                "--sketch", str(tryon_data / "test" / "im_sketch" / f"{people[0]}.png"),
                                "--prompt", "red t-shirt, short sleeves", "--steps", "2", "--out", str(tmp_path / "one")])
    assert code == 0, output
    assert (tmp_path / "one" / f"{people[0]}.png").is_file() and (tmp_path / "one" / "preview" / "grid.png").is_file()


def _single(tmp_path, tryon_data, trained, *extra):
    person = sorted((tryon_data / "test" / "image").glob("*.jpg"))[0]
    return ["try-on", "--checkpoint", str(trained["tryon"]), "--person", str(person), "--garment",
            str(tryon_data / "test" / "cloth" / person.name), "--out", str(tmp_path / "out"), *extra]


@pytest.mark.parametrize(("case", "expected"), [
    ("design-checkpoint", r"was trained for design .* use `atelier design`"),
    ("no-densepose", r"--densepose .*image-densepose.*not found.*prepare-tryon"),
    ("both", r"pass either --person IMG --garment IMG, or --test-set DIR"),
    ("garment-alone", r"--person missing"),
    ("guidance-nan", r"--guidance-scale nan"),
    ("garment-guidance-negative", r"--garment-guidance -1.0: expected a finite number at least 0"),
    ("not-a-run", r"--checkpoint .*: expected a tryon or garment-design training run"),
])  # fmt: skip
def test_bad_input_gets_one_line_naming_the_flag(case, expected, tmp_path, tryon_data, trained):
    argv = _single(tmp_path, tryon_data, trained)
    if case == "design-checkpoint":
        argv[2] = str(trained["garment-design"])
    elif case == "no-densepose":
        copy = tmp_path / "copy"
        shutil.copytree(tryon_data / "test", copy / "test")
        shutil.rmtree(copy / "test" / "image-densepose")
        argv[4] = str(copy / "test" / "image" / Path(argv[4]).name)
    elif case == "both":
        argv += ["--test-set", str(tryon_data)]
    elif case == "garment-alone":
        argv = argv[:3] + argv[5:]
    elif case == "guidance-nan":
        argv += ["--guidance-scale", "nan"]
    elif case == "garment-guidance-negative":
        argv += ["--garment-guidance", "-1"]
    elif case == "not-a-run":
        argv[2] = str(tmp_path)
    code, output = cli_outcome(argv)
    assert code == 2 and "Traceback" not in output
    lines = [line for line in output.splitlines() if "error" in line]
    assert len(lines) == 1 and re.search(expected, lines[0]), output



def test_mask_weight_of_one_is_the_plain_loss_and_weights_move_it():
    from atelier.training.losses import DiffusionLossConfig, denoising_loss

    unet = build_tiny_components().unet
    latents, context = torch.randn(2, 4, 16, 12), torch.randn(2, 77, 64)

    def loss(weight):
        return denoising_loss(unet, build_tiny_components().scheduler, latents, context,
                              torch.Generator().manual_seed(0), DiffusionLossConfig(), weight=weight)

    with torch.no_grad():
        plain, ones = loss(None), loss(torch.ones(2, 1, 16, 12))
        half = torch.zeros(2, 1, 16, 12)
        half[..., :8, :] = 1.0
        top = loss(half)
    assert torch.allclose(plain, ones, atol=1e-6) and not torch.allclose(plain, top)


def test_new_parts_learn_at_their_own_rate(tryon_data):
    from atelier.registry import build_task
    from atelier.training.loop import make_optimizer

    cfg = _config(tryon_data, "tryon", "noisy")
    cfg.new_parts_lr_scale = 10.0
    task = build_task(cfg)
    groups = task.parameter_groups()
    assert sum(len(g["params"]) for g in groups) == len(task.trainable_parameters())
    new = {id(p) for p in groups[1]["params"]}
    names = [n for n, p in task.trainable_state_dict().items() if id(p) in new]
    assert names and all(n.startswith(("cross_attention.", "garment_encoder.hint_in.", "unet.conv_in.")) for n in names)
    assert any(n.startswith("unet.conv_in.") for n in names)  # 9 of its 13 inputs are new
    optimizer = make_optimizer(cfg.train, task.trainable_parameters(), groups)
    assert [g["lr_scale"] for g in optimizer.param_groups] == [1.0, 10.0]


def test_reference_attention_starts_from_plain_self_attention_and_reads_every_block():
    """IDM-VTON's fusion: without garment tokens the network is its base UNet; with them every self-attention reads
    the garment network's tokens of the same block, so the output moves."""
    unet = build_tiny_components().unet
    latents, context, t = torch.randn(2, 4, 16, 12), torch.randn(2, 77, 64), torch.tensor([10, 700])
    with torch.no_grad():
        expected = unet(latents, t, context).sample
        net = TryOnNet(TryOnNetConfig(garment_input="garment", fusion="reference-attention"), unet)
        sample = torch.cat([latents, torch.randn(2, 9, 16, 12)], dim=1)
        tokens = net.encode_control(torch.randn(2, 4, 16, 12), context)
        plain, fused = net(sample, t, context, None).sample, net(sample, t, context, tokens).sample
    assert torch.allclose(plain, expected, atol=1e-5)
    assert len(tokens) == len(net.references) == 7  # every attn1 of the tiny UNet
    assert not torch.allclose(fused, plain)
    with pytest.raises(ValueError, match="garment_input"):
        TryOnNet(TryOnNetConfig(garment_input="noisy", fusion="reference-attention"), build_tiny_components().unet)


@pytest.mark.parametrize("fusion", ["zero-cross-attention", "reference-attention"])
def test_a_dropped_row_is_the_network_without_its_garment(fusion):
    """Garment dropout: a row with keep False gets exactly what the network gives without any garment."""
    torch.manual_seed(0)
    net = TryOnNet(TryOnNetConfig(garment_input="garment", attention_head_dim=8, fusion=fusion), build_tiny_components().unet)
    for cross in net.cross_attention:
        torch.nn.init.normal_(cross.to_out.weight, std=0.1)
    sample, context, t = torch.randn(2, 13, 16, 12), torch.randn(2, 77, 64), torch.tensor([500, 500])
    with torch.no_grad():
        garment = net.encode_control(torch.randn(2, 4, 16, 12), context)
        mixed = net(sample, t, context, garment, torch.tensor([True, False])).sample
        with_garment, without = net(sample, t, context, garment).sample, net(sample, t, context, None).sample
    assert torch.allclose(mixed[0], with_garment[0], atol=1e-5) and torch.allclose(mixed[1], without[1], atol=1e-5)
    assert not torch.allclose(with_garment[1], without[1])


def test_blended_sampling_keeps_the_cells_outside_the_mask():
    """denoise(known=...): after the last step every cell where the mask is 0 holds the clean latent exactly."""
    from atelier.diffusion.sampling import denoise, make_scheduler

    scheduler = make_scheduler("ddim", build_tiny_components().scheduler.config)
    scheduler.set_timesteps(4)
    clean, noise = torch.randn(2, 4, 6, 5), torch.randn(2, 4, 6, 5)
    mask = torch.zeros(2, 1, 6, 5)
    mask[..., 2:4, 1:3] = 1.0
    out = denoise(lambda x, t: torch.zeros_like(x), scheduler, torch.randn(2, 4, 6, 5), scheduler.timesteps,
                  show_progress=False, known=(clean, mask, noise))
    outside = (mask == 0).expand_as(out)
    assert torch.equal(out[outside], clean[outside]) and not torch.allclose(out[~outside], clean[~outside])


def test_garment_guidance_of_one_is_plain_sampling_and_others_move_it(trained, tryon_data):
    from atelier.data.formats.vitonhd import load_vitonhd
    from atelier.errors import UserError
    from atelier.methods.tryon.data import TryOnExamples, stack
    from atelier.methods.tryon.model import load_tryon_model
    from atelier.methods.tryon.sample import generate

    model = load_tryon_model(trained["tryon"], device="cpu")
    for cross in model.net.cross_attention:  # two training steps leave the projection near zero: make it matter
        torch.nn.init.normal_(cross.to_out.weight, std=0.1)
    examples = TryOnExamples(load_vitonhd(tryon_data, "test"), SIZE_HW, "tryon", "paired")
    batch = stack([examples[0]])
    args = (batch["agnostic"], batch["mask"], batch["densepose"], batch["control"])
    plain, one, three = (generate(model, *args, steps=2, seed=1, show_progress=False, **extra)
                         for extra in ({}, {"garment_guidance": 1.0}, {"garment_guidance": 3.0}))
    assert np.array_equal(np.asarray(plain[0]), np.asarray(one[0]))
    assert not np.array_equal(np.asarray(plain[0]), np.asarray(three[0]))
    with pytest.raises(UserError, match="--garment-guidance"):
        generate(model, *args, steps=2, garment_guidance=-1.0, show_progress=False)


@pytest.mark.parametrize(("task", "name"), [("tryon", "tiny-tryon.yaml"), ("garment-design", "tiny-garment-design.yaml")])
def test_the_tiny_configs_are_what_the_demo_trains(task, name, tmp_path):
    from atelier.config import read_yaml, to_dict
    from atelier.demo.context import DemoContext
    from atelier.demo.tryon import tryon_config
    from atelier.registry import config_from_dict

    written = config_from_dict(read_yaml(Path(__file__).resolve().parents[1] / "configs" / name))
    demo = tryon_config(DemoContext(out=tmp_path), task, Path(written.data.root), Path(written.model.base))
    assert to_dict(written) == to_dict(demo)
    for paper in ("tryon.yaml", "garment-design.yaml"):  # the paper's recipes parse
        cfg = config_from_dict(read_yaml(Path(__file__).resolve().parents[1] / "configs" / paper))
        assert (cfg.train.lr, tuple(cfg.data.image_size), cfg.net.fusion) == (1e-4, (512, 384), "zero-cross-attention")
