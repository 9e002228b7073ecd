"""`atelier edit` on a tiny MCLD run trained on FashionSynth written with --conditions: the swapped clothes change the
image, each swapped condition reaching the network is the donor's (the rest the person's), and the errors."""

import re
from pathlib import Path

import pytest
import torch

from atelier.cli import main
from atelier.data.transforms import load_image_tensor
from atelier.data.uv_texture import smpl_part_mask
from atelier.diffusion.encode import encode_images
from atelier.diffusion.speed import SpeedConfig
from atelier.methods.mcld import sample
from atelier.methods.mcld.data import condition_paths, read_face, read_pose_iuv, read_texture
from atelier.methods.mcld.model import load_mcld_model
from atelier.methods.mcld.network import MCLDNet
from tests.helpers import cli_outcome, quick_overrides, train_run

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-mcld.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


@pytest.fixture(scope="module")
def run(mcld_root, tiny_model_dir, tmp_path_factory):
    """A one-step tiny MCLD run."""
    overrides = quick_overrides(tiny_model_dir, mcld_root, 1, "data.max_pairs=4")
    return train_run(CONFIG, overrides, tmp_path_factory.mktemp("mcld-edit") / "run")


@pytest.fixture(scope="module")
def people(mcld_root):
    """A (the person), B (clothes), C (face), D (pose): four photos of three identities, each with its conditions."""
    images = sorted((mcld_root / "train_highres").glob("*.jpg"))
    by_identity: dict[str, list[Path]] = {}
    for image in images:
        by_identity.setdefault(re.search(r"id(\d{8})", image.stem).group(1), []).append(image)
    (a, d), (b, _), (c, _) = list(by_identity.values())[:3]  # D: A's identity in another pose
    return {"A": a, "B": b, "C": c, "D": d}


def _edit(run, people, out, *flags):
    return ["edit", "--checkpoint", str(run), "--person", str(people["A"]), *flags, "--steps", "2", "--out", str(out)]


def test_edit_with_clothes_from_writes_an_image_unlike_the_reconstruction(run, people, tmp_path):
    from PIL import Image

    assert main(_edit(run, people, tmp_path / "swap", "--clothes-from", str(people["B"]))) == 0
    output = tmp_path / "swap" / f"{people['A'].stem}.png"
    assert output.is_file() and (tmp_path / "swap" / "preview" / "grid.png").is_file()
    settings = (tmp_path / "swap" / "settings.json").read_text()
    assert '"clothes": "' + str(people["B"]) in settings
    # --pose-from A itself: every condition A's own, the no-swap reconstruction
    assert main(_edit(run, people, tmp_path / "same", "--pose-from", str(people["A"]))) == 0
    with Image.open(output) as swapped, Image.open(tmp_path / "same" / output.name) as same:
        assert swapped.size == same.size
        assert list(swapped.getdata()) != list(same.getdata())


@pytest.fixture(scope="module")
def model(run):
    return load_mcld_model(run, device="cpu", speed=SpeedConfig.plain())


def _capture(monkeypatch) -> dict:
    """Record what the first conditioned network call and the reference encoding receive."""
    seen: dict = {}
    forward, encode_reference = MCLDNet.forward, MCLDNet.encode_reference

    def record_forward(self, noisy, timestep, pose_iuv, source_clip, texture_clip, face_embedding, reference_tokens,
                       uncond=False):
        if not uncond and "pose_iuv" not in seen:
            seen.update(pose_iuv=pose_iuv, source_clip=source_clip, texture_clip=texture_clip, face=face_embedding)
        return forward(self, noisy, timestep, pose_iuv, source_clip, texture_clip, face_embedding, reference_tokens, uncond)

    def record_reference(self, texture_latent, context):
        seen["texture_latent"] = texture_latent
        return encode_reference(self, texture_latent, context)

    monkeypatch.setattr(MCLDNet, "forward", record_forward)
    monkeypatch.setattr(MCLDNet, "encode_reference", record_reference)
    return seen


def _expected(model, appearance: Path, face: Path, pose: Path) -> dict:
    """The conditions of `appearance`'s image and texture (its head `face`'s), `face`'s embedding and `pose`'s IUV, as
    the network gets them."""
    config = model.config
    texture = read_texture(condition_paths(appearance)["texture"], config.texture_size)[None]
    head = torch.tensor(smpl_part_mask((23, 24), config.texture_size))
    texture = torch.where(head, read_texture(condition_paths(face)["texture"], config.texture_size)[None], texture)
    return {"pose_iuv": read_pose_iuv(condition_paths(pose)["densepose"], config.image_size)[0][None],
            "source_clip": model.clip((load_image_tensor(appearance, config.image_size)[None] + 1) / 2),
            "texture_clip": model.clip((texture + 1) / 2),
            "face": read_face(condition_paths(face)["face"], model.net.cfg.projector.embedding_dim)[None],
            "texture_latent": encode_images(model.vae, texture)[0]}


@pytest.mark.parametrize("donors", [("B", "C", "D"), ("A", "C", "A"), ("A", "A", "D"), ("B", "A", "A")],
                         ids=["all-three", "face-only", "pose-only", "clothes-only"])
def test_each_swapped_condition_is_the_donors_and_the_rest_the_persons(model, people, monkeypatch, donors):
    clothes, face, pose = (people[key] if key != "A" else None for key in donors)
    seen = _capture(monkeypatch)
    conditions, _ = sample.edit(model, people["A"], clothes, face, pose, steps=1, show_progress=False)
    expected = _expected(model, *(people[key] for key in donors))
    assert conditions.donors == {"clothes": people[donors[0]], "face": people[donors[1]], "pose": people[donors[2]]}
    for name, value in expected.items():
        torch.testing.assert_close(seen[name].float(), value.float(), msg=name)
    # the donors differ from A in what was swapped (else the check above proves nothing)
    own = _expected(model, people["A"], people["A"], people["A"])
    for name, keys in (("texture_latent", (0, 1)), ("face", (1,)), ("pose_iuv", (2,))):
        assert torch.equal(expected[name], own[name]) == all(donors[key] == "A" for key in keys), name


def test_edit_needs_a_donor(run, people, tmp_path):
    code, output = cli_outcome(_edit(run, people, tmp_path / "out"))
    assert code == 2 and "needs at least one of --clothes-from, --face-from, --pose-from" in output


def test_a_missing_donor_texture_is_named_before_the_model_loads(mcld_root, people, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(mcld_root, root)
    donor = root / "train_highres" / people["B"].name
    condition_paths(donor)["texture"].unlink()
    code, output = cli_outcome(["edit", "--checkpoint", str(tmp_path / "no-run"), "--person",
                                str(root / "train_highres" / people["A"].name), "--clothes-from", str(donor),
                                "--out", str(tmp_path / "out")])
    assert code == 2, output
    assert f"{people['B'].stem}.png: the UV texture map of the --clothes-from person not found" in output
    assert "atelier prepare-conditions" in output
