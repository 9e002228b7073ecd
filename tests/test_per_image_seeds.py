"""Per-image seeds: an image's result depends only on its own seed, not on its batch (tiny models, CPU).

Each pipeline run on a batch must equal its images run one by one, image i with seed S + i (or the seed its list
names), with DDPM (fresh noise at every step) and with the pipeline's default sampler; the folder commands number seeds
by input position, so --batch-size and resuming do not change a file.

Tolerances: a batch and its images run alone differ only by the rounding of batched kernels (measured ~1e-6 of the
largest latent), so latents are compared to 1e-5 of their largest value (as tests/test_speed.py) and written PNGs to
one grey level; noise drawn from a shared batch generator moves them by O(1), which each test checks it would see.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.diffusion.components import build_tiny_components, freeze
from atelier.diffusion.img2img import translate
from atelier.diffusion.sampling import image_generators, image_seeds, randn_per_image
from atelier.diffusion.text2img import generate
from tests.helpers import write_random_photos

SHARE = 1e-5
FAST = dict(steps=4, show_progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


@pytest.fixture(scope="module")
def components():
    components = build_tiny_components()
    freeze(components.unet, components.vae, components.text_encoder)
    return components


def photos(count: int = 3, size: tuple[int, int] = (32, 32)) -> torch.Tensor:
    return torch.rand(count, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def assert_batch_equals_alone(batch: torch.Tensor, alone: list[torch.Tensor], other_seed: torch.Tensor) -> None:
    """Row i of `batch` equals alone[i] (up to batched rounding), while another seed for image 0 visibly differs."""
    torch.testing.assert_close(batch, torch.cat(alone), rtol=0, atol=SHARE * batch.abs().max().item())
    assert (other_seed - alone[0]).abs().max() > 1e-2, "the seed does not reach the output: the test would prove nothing"


def test_an_int_seed_numbers_the_images_and_a_list_names_them(components) -> None:
    assert image_seeds(5, 3) == [5, 6, 7] and image_seeds([9, 2], 2) == [9, 2] and image_seeds(np.int64(1), 1) == [1]
    with pytest.raises(ValueError, match="got 2 seeds for 3 images"):
        image_seeds([1, 2], 3)
    with pytest.raises(ValueError, match="got 2 generators for a batch of 3"):
        randn_per_image((3, 4), image_generators(0, 2))
    with pytest.raises(ValueError, match="got 2 seeds for 3 images"):
        translate(components, photos(), [""] * 3, seed=[1, 2], **FAST)
    noise = randn_per_image((2, 4), image_generators(7, 2))
    torch.testing.assert_close(noise[1:], torch.randn(1, 4, generator=torch.Generator().manual_seed(8)), rtol=0, atol=0)


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim"])  # ddpm injects noise at every step; ddim is the default
def test_translate_of_a_batch_is_each_image_translated_alone(components, scheduler: str) -> None:
    images, prompts = photos(), ["a red dress", "a coat", ""]
    settings = dict(strength=0.75, guidance_scale=3.0, scheduler=scheduler, **FAST)
    batch = translate(components, images, prompts, seed=10, **settings).latents
    alone = [translate(components, images[i : i + 1], prompts[i : i + 1], seed=10 + i, **settings).latents for i in range(3)]
    other = translate(components, images[:1], prompts[:1], seed=11, **settings).latents
    assert_batch_equals_alone(batch, alone, other)


def test_a_seed_list_follows_its_image_through_the_batch(components) -> None:
    images, settings = photos(), dict(strength=0.75, scheduler="ddpm", **FAST)
    forward = translate(components, images, [""] * 3, seed=[4, 8, 15], **settings).latents
    backward = translate(components, images.flip(0), [""] * 3, seed=[15, 8, 4], **settings).latents
    torch.testing.assert_close(backward, forward.flip(0), rtol=0, atol=SHARE * forward.abs().max().item())


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim"])
def test_generate_of_a_batch_is_each_prompt_sampled_alone(components, scheduler: str) -> None:
    prompts, settings = ["a red dress", "a coat", "a hat"], dict(size_hw=(32, 32), guidance_scale=3.0, scheduler=scheduler, **FAST)
    batch = generate(components, prompts, seed=3, **settings).latents
    alone = [generate(components, prompts[i : i + 1], seed=3 + i, **settings).latents for i in range(3)]
    other = generate(components, prompts[:1], seed=4, **settings).latents
    assert_batch_equals_alone(batch, alone, other)


def test_illustrate_of_a_batch_is_each_photo_alone() -> None:
    from atelier.methods.unidllora.model import Illustrator
    from atelier.methods.unidllora.sample import illustrate
    from atelier.methods.unidllora.sketch import xdog_sketch
    from atelier.methods.unidllora.uni_adapter import UniAdapter, build_uni_adapter

    components = build_tiny_components()
    freeze(components.unet, components.vae, components.text_encoder)
    adapter = build_uni_adapter(components.unet, components.latent_scale, num_res_blocks=1).eval()
    model = Illustrator(components, UniAdapter(adapter, xdog_sketch))
    images, settings = photos(size=(32, 32)), dict(strength=0.75, **FAST)  # the paper's DDPM by default
    batch = illustrate(model, images, seed=5, **settings).latents
    alone = [illustrate(model, images[i : i + 1], seed=5 + i, **settings).latents for i in range(3)]
    assert_batch_equals_alone(batch, alone, illustrate(model, images[:1], seed=6, **settings).latents)


@pytest.fixture(scope="module")
def pose_model():
    from atelier.methods.cfld.model import PoseModel, PoseModelConfig
    from atelier.methods.cfld.network import CFLD, tiny_cfld_config

    torch.manual_seed(0)
    components = build_tiny_components()
    cfld = CFLD(tiny_cfld_config(), components.unet, (32, 24)).eval().requires_grad_(False)
    config = PoseModelConfig(cfld=tiny_cfld_config(), image_size=(32, 24), appearance_size=(32, 24), pose_size=(32, 24))
    return PoseModel(cfld, components.vae.requires_grad_(False), components.scheduler, config)


def pose_inputs(count: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(count, 3, 32, 24, generator=generator) * 2 - 1, torch.rand(count, 21, 32, 24, generator=generator)


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim"])  # ddpm is the default (as CFLD)
def test_pose_transfer_of_a_batch_is_each_pair_alone(pose_model, scheduler: str) -> None:
    from atelier.methods.cfld.sample import transfer

    source, pose = pose_inputs()
    batch = transfer(pose_model, source, pose, seed=2, scheduler=scheduler, **FAST).latents
    alone = [transfer(pose_model, source[i : i + 1], pose[i : i + 1], seed=2 + i, scheduler=scheduler, **FAST).latents
             for i in range(3)]
    assert_batch_equals_alone(batch, alone, transfer(pose_model, source[:1], pose[:1], seed=3, scheduler=scheduler, **FAST).latents)


def test_transfer_pairs_seeds_each_pair_by_its_index(pose_model) -> None:
    """Pair 2 drawn in a batch of three equals pair 2 drawn alone (as a resumed test-set run draws it)."""
    from atelier.methods.cfld.sample import transfer_pairs

    source, pose = pose_inputs()
    pairs = [SimpleNamespace(appearance=a, target_pose=p) for a, p in zip(source, pose)]

    def image_of_pair_2(indices: list[int], batch_size: int, seed: int = 7) -> np.ndarray:
        drawn = [image for _, images in transfer_pairs(pose_model, pairs, indices, batch_size, seed=seed, steps=4)
                 for image in images]
        return np.asarray(drawn[indices.index(2)], dtype=np.int16)

    alone = image_of_pair_2([2], 1)
    assert np.abs(image_of_pair_2([0, 1, 2], 3) - alone).max() <= 1
    assert np.abs(image_of_pair_2([2], 1, seed=8) - alone).max() > 1


def translate_folder(photos_dir: Path, out: Path, *extra: str) -> dict[str, np.ndarray]:
    """Run `atelier translate` on the folder; return {output name: pixels} of what OUT holds."""
    argv = ["translate", str(photos_dir), "--model", "tiny", "--out", str(out), "--size", "32x32", "--steps", "4",
            "--scheduler", "ddpm", "--strength", "0.75", "--prompt", "an illustration, ", *extra]
    assert main(argv) == 0
    return {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in sorted((out / photos_dir.name).glob("*.png"))}


def assert_same_pixels(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert np.abs(a[name] - b[name]).max() <= 1, name


def test_translate_command_output_is_independent_of_batch_size_and_resume(tmp_path: Path) -> None:
    photos_dir = tmp_path / "photos"
    write_random_photos(photos_dir, 4, (32, 32))
    one_by_one = translate_folder(photos_dir, tmp_path / "b1", "--batch-size", "1")
    batched = translate_folder(photos_dir, tmp_path / "b3", "--batch-size", "3")
    assert sorted(batched) == ["p0.png", "p1.png", "p2.png", "p3.png"]
    assert_same_pixels(one_by_one, batched)

    (tmp_path / "b3" / "photos" / "p1.png").unlink()  # an interrupted run: p1 is redrawn alone, still with seed 0 + 1
    assert_same_pixels(translate_folder(photos_dir, tmp_path / "b3", "--batch-size", "3"), batched)

    shifted = translate_folder(photos_dir, tmp_path / "seed1", "--batch-size", "3", "--seed", "1")
    assert np.abs(shifted["p1.png"] - batched["p1.png"]).max() > 1  # another seed moves pixels by far more than 1 level
