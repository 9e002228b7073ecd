"""MCLD training, its model folder and sampling at tiny size on FashionSynth written with --conditions: `atelier train`
(task mcld), exact resume, reload to identical images, the paper's loss by default, the face-region weight, and
`atelier pose-transfer --method mcld` writing CFLD's output names."""

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atelier.cli import main
from atelier.config import read_yaml
from atelier.diffusion.speed import SpeedConfig
from atelier.errors import UserError
from atelier.methods.cfld.sample import output_name
from atelier.methods.mcld.model import load_mcld_model
from atelier.methods.mcld.sample import transfer_pairs
from atelier.methods.mcld.train import MCLDConfig
from atelier.metrics.matching import match_files, read_pairs
from atelier.registry import build_task, load_config
from atelier.training.loop import train
from tests.helpers import assert_resumes_exactly, quick_overrides, train_run

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-mcld.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


def _overrides(root, tiny_model_dir, steps=2):
    return quick_overrides(tiny_model_dir, root, steps, "data.max_pairs=4")


@pytest.fixture(scope="module")
def trained_run(mcld_root, tiny_model_dir, tmp_path_factory):
    return train_run(CONFIG, _overrides(mcld_root, tiny_model_dir), tmp_path_factory.mktemp("mcld") / "run")


def test_the_paper_recipe_is_the_default():
    cfg = MCLDConfig()
    assert (cfg.schedule.prediction_type, cfg.schedule.rescale_betas_zero_snr, cfg.schedule.timestep_spacing) == (
        "v_prediction", True, "trailing")
    assert (cfg.loss.min_snr_gamma, cfg.loss.noise_offset, cfg.loss.timestep_sampling) == (5.0, 0.05, "uniform")
    assert cfg.condition_dropout == 0.1 and cfg.face_loss_weight > 0
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay) == ("adamw", 1e-5, 1e-2)
    assert cfg.data.image_size == (512, 512) and (cfg.sample.steps, cfg.sample.guidance_scale) == (20, 3.5)
    tiny = load_config(CONFIG)  # the tiny config keeps the paper's loss and schedule
    assert tiny.schedule == cfg.schedule and tiny.loss == cfg.loss and tiny.condition_dropout == 0.1
    with pytest.raises(UserError, match="v_prediction"):
        build_task(load_config(CONFIG, ["schedule.prediction_type=epsilon", "data.root=anywhere"]))
    paper = load_config(CONFIG.with_name("mcld.yaml"))
    assert paper.schedule == cfg.schedule and paper.loss == cfg.loss and paper.train.lr == 1e-5


def test_train_writes_the_mcld_folder_with_the_trained_schedule(trained_run):
    final = trained_run / "final"
    assert {"mcld.safetensors", "mcld.yaml", "unet", "vae", "scheduler", "image_encoder"} <= {p.name for p in final.iterdir()}
    weights = load_file(str(final / "mcld.safetensors"))
    assert any(k.startswith("reference_unet.up_blocks") for k in weights) and any(k.startswith("pose_guider.") for k in weights)
    assert any(k.endswith("attn2.processor.to_k_ip.weight") for k in weights)
    assert not any(k.startswith("unet.") and ".processor." not in k for k in weights)
    unet = load_file(str(final / "unet" / "diffusion_pytorch_model.safetensors"))
    assert not any(".processor." in k for k in unet)  # a plain diffusers UNet
    scheduler = read_yaml(final / "scheduler" / "scheduler_config.json")
    assert (scheduler["prediction_type"], scheduler["rescale_betas_zero_snr"], scheduler["timestep_spacing"]) == (
        "v_prediction", True, "trailing")


def test_mcld_training_resumes_exactly(trained_run, mcld_root, tiny_model_dir, tmp_path):
    assert_resumes_exactly(CONFIG, _overrides(mcld_root, tiny_model_dir), tmp_path / "run", trained_run, "face_projector.")


def test_the_saved_folder_reloads_to_identical_images(mcld_root, tiny_model_dir, tmp_path):
    cfg = load_config(CONFIG, _overrides(mcld_root, tiny_model_dir, steps=1))
    task = build_task(cfg)
    train(task, cfg.train, tmp_path / "run", config=cfg)
    task.net.eval()
    pairs = task.pairs[:2]
    sampling = {"steps": 3, "guidance_scale": 3.5, "seed": 5}
    (_, before), = transfer_pairs(task.model, task.split.image_dir, pairs, [0, 1], **sampling)
    same_kernels = dataclasses.replace(SpeedConfig.plain(), sdpa=True)  # the training model's processors: SDPA, unfused
    loaded = load_mcld_model(tmp_path / "run", device="cpu", speed=same_kernels)
    (_, after), = transfer_pairs(loaded, task.split.image_dir, pairs, [0, 1], **sampling)
    for a, b in zip(before, after):
        assert list(a.getdata()) == list(b.getdata())
    (_, other), = transfer_pairs(loaded, task.split.image_dir, pairs, [0, 1], **{**sampling, "guidance_scale": 1.0})
    assert list(other[0].getdata()) != list(after[0].getdata())  # guidance runs the unconditional branch


def test_the_fast_path_keeps_mclds_processors(trained_run):
    from atelier.diffusion.reference import ReferenceSelfAttnProcessor, transformer_blocks
    from atelier.methods.mcld.attention import MultiFocalCrossAttnProcessor

    model = load_mcld_model(trained_run, device="cpu", speed=SpeedConfig(fuse_qkv=True, sdpa=True))
    for block in transformer_blocks(model.net.unet):
        assert isinstance(block.block.attn1.processor, ReferenceSelfAttnProcessor)
        assert isinstance(block.block.attn2.processor, MultiFocalCrossAttnProcessor)


def test_the_face_region_weight_acts_only_where_the_face_parts_are(mcld_root, tiny_model_dir):
    cfg = load_config(CONFIG, _overrides(mcld_root, tiny_model_dir))
    task = build_task(cfg)
    source, target = task.collate([0, 1])
    assert float(target.face_cells.max()) > 0  # FashionSynth's IUV has the head parts 23, 24

    def loss(weight, batch):
        task.cfg.face_loss_weight = weight
        with torch.no_grad():
            return float(task.training_loss(batch, torch.Generator().manual_seed(0), 0))

    assert loss(0.0, (source, target)) != loss(4.0, (source, target))
    faceless = copy.copy(target)
    faceless.face_cells = torch.zeros_like(target.face_cells)
    assert loss(0.0, (source, faceless)) == loss(4.0, (source, faceless))


def test_pose_transfer_mcld_writes_cfld_named_outputs(trained_run, mcld_root, tmp_path):
    pairs = read_pairs(mcld_root / "fasion-resize-pairs-test.csv")
    out = tmp_path / "test"
    assert main(["pose-transfer", "--method", "mcld", "--checkpoint", str(trained_run), "--test-set", str(mcld_root),
                 "--limit", "2", "--steps", "2", "--out", str(out)]) == 0
    generated = sorted(out.glob("*.png"))
    assert {p.name for p in generated} == {output_name(a, b) for a, b in pairs[:2]}
    matched = match_files(generated, sorted((mcld_root / "test_highres").glob("*.jpg")), pairs)
    assert {(m.source, m.ground_truth.stem) for m in matched.matches} == set(pairs[:2])
    source, target = pairs[0]
    one = tmp_path / "one"
    assert main(["pose-transfer", "--method", "mcld", "--checkpoint", str(trained_run / "final"), "--source",
                 str(mcld_root / "test_highres" / f"{source}.jpg"), "--target-pose",
                 str(mcld_root / "test_highres" / f"{target}.jpg"), "--steps", "2", "--out", str(one)]) == 0
    assert (one / f"{source}_2_{target}.png").is_file()


def test_the_tiny_config_is_what_the_demo_trains():
    from atelier.config import to_dict
    from atelier.demo.context import DemoContext
    from atelier.demo.mcld import mcld_config

    written = load_config(CONFIG)
    demo = mcld_config(DemoContext(out=Path(written.data.root).parent.parent), Path(written.model.base))
    assert to_dict(written) == to_dict(demo)
