"""MCLD's network at tiny size: zero-initialised start, reference tokens, multi-focal contexts, the unconditional
branch, one reference pass per image, trainable parameters and the released files' key layout."""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.config import from_dict, to_dict
from atelier.diffusion.components import build_tiny_components
from atelier.diffusion.reference import transformer_blocks
from atelier.errors import UserError
from atelier.methods.mcld.clip_image import load_clip_image_encoder, tiny_clip_image_encoder
from atelier.methods.mcld.network import MCLDNet, MCLDNetConfig, tiny_mcld_config
from atelier.methods.mcld.pose_guider import PoseGuider, PoseGuiderConfig
from atelier.methods.mcld.projector import FaceProjector, FaceProjectorConfig
from atelier.methods.mcld.release import PROJECTOR_NAMES, load_mcld_release, save_mcld_release

SIZE = (64, 48)  # the tiny base's images; VAE factor 4 -> latents 16x12
LATENT = (16, 12)
TEXTURE_LATENT = (16, 16)  # the texture map is square; its tokens need not match the target's in number
SCALE, DIM, FACE = 4, 64, 16  # tiny: latent scale, context width, face embedding width

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


@pytest.fixture(scope="module")
def unet():
    return build_tiny_components(seed=0).unet


def tiny_net(unet, seed=0, **changes) -> MCLDNet:
    torch.manual_seed(seed)
    cfg = tiny_mcld_config()
    for key, value in changes.items():
        setattr(cfg, key, value)
    return MCLDNet(cfg, copy.deepcopy(unet), copy.deepcopy(unet), latent_scale=SCALE)


def inputs(batch=2, seed=0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "noisy": torch.randn(batch, 4, *LATENT, generator=generator),
        "timestep": torch.tensor([10, 700][:batch]),
        "pose_iuv": torch.rand(batch, 3, *SIZE, generator=generator),
        "source_clip": torch.randn(batch, 1, DIM, generator=generator),
        "texture_clip": torch.randn(batch, 1, DIM, generator=generator),
        "face_embedding": torch.randn(batch, FACE, generator=generator),
    }


def texture(batch=2, seed=1) -> torch.Tensor:
    return torch.randn(batch, 4, *TEXTURE_LATENT, generator=torch.Generator().manual_seed(seed))


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Fresh random values everywhere (zero-initialised parts included), so a wrong key would show in the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1 + (param if param.ndim == 1 else 0))


def sd15_layout_unet():
    """SD 1.5's block layout (4 levels, 2 layers per block, cross-attention in the first three) at a tiny width."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, layers_per_block=2, block_out_channels=(32, 32, 32, 32), cross_attention_dim=DIM,
        attention_head_dim=8, norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )  # fmt: skip


def test_transformer_blocks_pair_by_traversal_order(unet):
    blocks = transformer_blocks(unet)  # tiny: one per down attention, the mid block, two per up block
    assert [b.stage for b in blocks] == ["down", "down", "mid", "up", "up", "up", "up"]
    assert blocks[2].path == "mid_block.attentions.0.transformer_blocks.0"
    assert blocks[-1].path == "up_blocks.2.attentions.1.transformer_blocks.0"
    sd15 = sd15_layout_unet()
    stages = [b.stage for b in transformer_blocks(sd15)]
    assert (stages.count("down"), stages.count("mid"), stages.count("up")) == (6, 1, 9)  # MCLD's 16 blocks
    with pytest.raises(ValueError, match="the denoising UNet has 16 transformer blocks and the reference UNet 7"):
        MCLDNet(tiny_mcld_config(), sd15, copy.deepcopy(unet), latent_scale=SCALE)


def test_pose_guider_lands_on_the_latent_grid_and_starts_at_zero():
    guider = PoseGuider(PoseGuiderConfig(), 320, latent_scale=8)  # MCLD's: SD 1.5's first width, VAE factor 8
    out = guider(torch.rand(1, 3, 64, 48))
    assert out.shape == (1, 320, 8, 6) and not out.any()
    names = {name.rsplit(".", 1)[0] for name in guider.state_dict()}
    assert names == {"conv_in", "conv_out", *(f"blocks.{i}" for i in range(6))}  # ControlNet's embedding layout
    assert [guider.blocks[i].stride for i in (0, 1, 5)] == [(1, 1), (2, 2), (2, 2)]
    assert guider.blocks[5].out_channels == 256 and guider.blocks[3].in_channels == 32
    plain = PoseGuider(PoseGuiderConfig(refine_convs=False), 320, latent_scale=8)
    assert len(plain.blocks) == 3 and plain(torch.rand(1, 3, 64, 48)).shape == (1, 320, 8, 6)
    tiny = PoseGuider(PoseGuiderConfig(channels=[8, 16, 32]), 32, latent_scale=4)  # two halvings for the tiny VAE
    assert tiny(torch.rand(2, 3, *SIZE)).shape == (2, 32, *LATENT)
    with pytest.raises(ValueError, match=r"latent scale 4 needs 3 widths .*got 4"):
        PoseGuider(PoseGuiderConfig(), 32, latent_scale=4)


def test_face_projector_sizes():
    with torch.device("meta"):  # MCLD's size (about 80M parameters) without allocating it
        paper = FaceProjector(FaceProjectorConfig(), context_dim=768)
        assert paper(torch.zeros(2, 512)).shape == (2, 16, 768)
    assert paper.layers[3].attention.to_k.out_features == 20 * 64 and len(paper.layers) == 4
    torch.manual_seed(0)
    tiny = FaceProjector(tiny_mcld_config().projector, context_dim=DIM)
    tokens = tiny(torch.randn(3, FACE))
    assert tokens.shape == (3, 4, DIM) and torch.isfinite(tokens).all()
    with pytest.raises(ValueError, match=r"expected \(batch, 16\)"):
        tiny(torch.randn(3, 1, FACE))


def test_without_reference_and_face_the_network_is_the_base_unet(unet):
    """Zero pose guider, no reference tokens and face scale 0: with one CLIP token for both source and texture (the
    mid block's [x; x] attends like [x]) the network is the UNet it wraps."""
    net = tiny_net(unet, face_scale=0.0)
    x = inputs()
    context = x["source_clip"]
    with torch.no_grad():
        expected = unet(x["noisy"], x["timestep"], context).sample
        got = net(**{**x, "texture_clip": context}, reference_tokens=None).sample
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        net.set_face_scale(0.5)  # MCLD's scale: the face tokens now reach every attn2
        with_face = net(**{**x, "texture_clip": context}, reference_tokens=None).sample
    assert float((with_face - expected).abs().max()) > 1e-3


def test_reference_tokens_and_each_context_change_the_output(unet):
    net = tiny_net(unet)
    x = inputs()
    with torch.no_grad():
        tokens = net.encode_reference(texture(), x["texture_clip"])
        widths = [b.block.norm1.normalized_shape[0] for b in transformer_blocks(net.unet)]
        assert [t.shape[-1] for t in tokens] == widths and tokens[0].shape == (2, 16 * 16, 32)  # 16x16 texture grid
        plain = net(**x, reference_tokens=None).sample
        with_reference = net(**x, reference_tokens=tokens).sample
        other_texture = net(**x, reference_tokens=net.encode_reference(texture(seed=5), x["texture_clip"])).sample
        other_source = net(**{**x, "source_clip": -x["source_clip"]}, reference_tokens=tokens).sample
        other_face = net(**{**x, "face_embedding": -x["face_embedding"]}, reference_tokens=tokens).sample
        down, mid, up = (next(p for p in net.cross_attention if p.stage == s) for s in ("down", "mid", "up"))
        assert torch.equal(down.context, x["source_clip"]) and torch.equal(up.context, x["texture_clip"])
        assert torch.equal(mid.context, torch.cat([x["source_clip"], x["texture_clip"]], dim=1))  # MCLD's mid: both
        with pytest.raises(ValueError, match="6 reference tokens for 7 transformer blocks"):
            net(**x, reference_tokens=tokens[:-1])
        with pytest.raises(ValueError, match=r"pose_iuv of shape \(2, 3, 32, 24\): expected \(2, 3, 64, 48\)"):
            net(**{**x, "pose_iuv": x["pose_iuv"][..., ::2, ::2]}, reference_tokens=tokens)
    for changed in (with_reference, other_texture, other_source, other_face):
        assert float((changed - plain).abs().max()) > 1e-3
    assert float((other_texture - with_reference).abs().max()) > 1e-3


def test_reference_unet_runs_once_per_image_when_sampling(unet):
    """The issue's requirement: the reference features are computed once per image, not per denoising step."""
    from diffusers import DDIMScheduler

    net = tiny_net(unet)
    calls = {"reference": 0, "denoising": 0}
    net.reference_unet.register_forward_hook(lambda *_: calls.__setitem__("reference", calls["reference"] + 1))
    net.unet.register_forward_hook(lambda *_: calls.__setitem__("denoising", calls["denoising"] + 1))
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    scheduler.set_timesteps(3)
    x = inputs(batch=1)
    latents = x.pop("noisy")
    with torch.no_grad():
        tokens = net.encode_reference(texture(batch=1), x["texture_clip"])  # once per image
        for t in scheduler.timesteps:
            step = {**x, "timestep": t.reshape(1), "reference_tokens": tokens}
            cond = net(latents, **step).sample
            uncond = net(latents, **step, uncond=True).sample
            latents = scheduler.step(uncond + 3.5 * (cond - uncond), t, latents).prev_sample  # MCLD's guidance 3.5
    assert calls == {"reference": 1, "denoising": 6} and torch.isfinite(latents).all()


def test_uncond_branch_ignores_the_conditions(unet):
    net = tiny_net(unet)
    randomise(net.pose_guider, seed=3)  # a trained guider: the pose now shows in the output
    a, b = inputs(seed=0), inputs(seed=1)
    b.update(noisy=a["noisy"], pose_iuv=a["pose_iuv"])
    with torch.no_grad():
        tokens = net.encode_reference(texture(), a["texture_clip"])
        uncond_a = net(**a, reference_tokens=tokens, uncond=True).sample
        uncond_b = net(**b, reference_tokens=None, uncond=True).sample
        zeros = {k: torch.zeros_like(v) for k, v in a.items() if k in ("source_clip", "texture_clip", "face_embedding")}
        explicit = net(**{**a, **zeros}, reference_tokens=None).sample
        pose = torch.rand(a["pose_iuv"].shape, generator=torch.Generator().manual_seed(2))
        other_pose = net(**{**a, "pose_iuv": pose}, reference_tokens=None, uncond=True).sample
        net.cfg.uncond_keeps_pose = False
        without_pose = [net(**{**a, "pose_iuv": p}, reference_tokens=None, uncond=True).sample for p in (a["pose_iuv"], pose)]
    assert torch.equal(uncond_a, uncond_b) and torch.equal(uncond_a, explicit)
    assert float((other_pose - uncond_a).abs().max()) > 1e-3  # by default the pose stays in both branches
    assert torch.equal(*without_pose)


def test_config_round_trips_through_plain_dicts():
    cfg = tiny_mcld_config()
    assert from_dict(MCLDNetConfig, to_dict(cfg)) == cfg  # what a yaml beside the weights holds
    assert from_dict(MCLDNetConfig, {"pose_guider": {"refine_convs": False}}).projector.dim == 1280  # paper defaults


def test_trainable_parameters_are_the_papers(unet):
    net = tiny_net(unet)
    trained = net.trainable()
    frozen = {name for name, _ in net.named_parameters()} - set(trained)
    assert frozen and all(name.startswith("reference_unet.up_blocks.2.") for name in frozen)  # the last up block
    assert not any(name.startswith("reference_unet.up_blocks.2.") for name in trained)
    assert any(name.startswith("reference_unet.up_blocks.1.") for name in trained)
    assert {name.split(".")[0] for name in trained} == {"unet", "reference_unet", "pose_guider", "face_projector"}
    assert sum(".attn2.processor.to_k_ip." in name or ".attn2.processor.to_v_ip." in name for name in trained) == 14
    assert all(p.requires_grad == (name in trained) for name, p in net.named_parameters())
    sd15 = sd15_layout_unet()
    full = MCLDNet(tiny_mcld_config(), sd15, copy.deepcopy(sd15), latent_scale=SCALE)
    names, trained = dict(full.named_parameters()), full.trainable()
    assert {n for n in names if n not in trained} == {n for n in names if n.startswith("reference_unet.up_blocks.3.")}


def test_gradients_reach_every_trained_part_with_gradient_checkpointing(unet):
    net = tiny_net(unet)
    net.enable_gradient_checkpointing()
    net.train()
    x = inputs()
    tokens = net.encode_reference(texture(), x["texture_clip"])
    net(**x, reference_tokens=tokens).sample.square().mean().backward()

    def reached(param):
        return param.grad is not None and float(param.grad.abs().sum()) > 0

    assert reached(net.reference_unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight)
    assert reached(net.reference_unet.conv_in.weight)
    assert reached(net.pose_guider.conv_out.weight)  # zero-initialised, yet it gets a gradient
    assert all(reached(p) for p in net.face_projector.parameters())
    assert reached(net.cross_attention[0].to_k_ip.weight) and reached(net.unet.conv_in.weight)


def test_released_layout_round_trip(unet, tmp_path):
    source = tiny_net(unet, seed=0)
    for seed, part in enumerate((source.unet, source.reference_unet, source.pose_guider, source.face_projector)):
        randomise(part, seed=10 + seed)
    save_mcld_release(source, tmp_path)
    files = {name: torch.load(tmp_path / name, weights_only=True) for name in
             ("denoising_unet.pth", "reference_unet.pth", "pose_guider.pth", "image_proj_model.pth")}
    # the released names (diffusers UNets with IP projections; ControlNet-style guider; IP-Adapter's resampler)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.weight" in files["denoising_unet.pth"]
    assert "mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_v_ip.weight" in files["denoising_unet.pth"]
    assert not any("processor" in name for name in files["reference_unet.pth"])
    assert {"conv_in.weight", "blocks.3.weight", "conv_out.bias"} <= set(files["pose_guider.pth"])
    projector = files["image_proj_model.pth"]
    assert {"latents", "proj_in.weight", "layers.0.0.norm1.bias", "layers.0.0.norm2.weight", "layers.0.0.to_q.weight",
            "layers.0.0.to_out.weight", "layers.0.1.0.weight", "layers.0.1.1.weight", "layers.0.1.3.weight",
            "proj_out.bias", "norm_out.weight"} < set(projector)
    attention = source.face_projector.layers[0].attention
    assert torch.equal(projector["layers.0.0.to_kv.weight"], torch.cat([attention.to_k.weight, attention.to_v.weight]))

    target = tiny_net(unet, seed=1)
    x = inputs()
    with torch.no_grad():
        expected = source(**x, reference_tokens=source.encode_reference(texture(), x["texture_clip"])).sample
        before = target(**x, reference_tokens=target.encode_reference(texture(), x["texture_clip"])).sample
        assert float((before - expected).abs().max()) > 1e-3
        (tmp_path / PROJECTOR_NAMES[0]).rename(tmp_path / PROJECTOR_NAMES[1])  # the README's name is read too
        load_mcld_release(target, tmp_path)
        got = target(**x, reference_tokens=target.encode_reference(texture(), x["texture_clip"])).sample
    assert torch.equal(got, expected)


def test_released_files_that_do_not_fit_are_named(unet, tmp_path):
    net = tiny_net(unet)
    save_mcld_release(net, tmp_path)
    (tmp_path / "pose_guider.pth").unlink()
    with pytest.raises(UserError, match=r"missing pose_guider.pth; expected denoising_unet.pth, reference_unet.pth"):
        load_mcld_release(net, tmp_path)
    torch.save(net.pose_guider.state_dict(), tmp_path / "pose_guider.pth")
    projector = torch.load(tmp_path / "image_proj_model.pth", weights_only=True)
    torch.save({**projector, "pos_emb.weight": torch.zeros(1)}, tmp_path / "image_proj_model.pth")
    with pytest.raises(UserError, match=r"image_proj_model.pth: 1 unexpected keys \(first: \['pos_emb.weight'\]\)"):
        load_mcld_release(net, tmp_path)
    torch.save(projector, tmp_path / "image_proj_model.pth")
    state = torch.load(tmp_path / "denoising_unet.pth", weights_only=True)
    torch.save({k: v for k, v in state.items() if "to_k_ip" not in k}, tmp_path / "denoising_unet.pth")
    with pytest.raises(UserError, match=r"denoising_unet.pth: does not fit MCLD's unet .*7 missing \(first: .*to_k_ip"):
        load_mcld_release(net, tmp_path)
    torch.save(state, tmp_path / "denoising_unet.pth")
    plain = tiny_net(unet, pose_guider=PoseGuiderConfig(channels=[8, 16, 32], refine_convs=False))
    with pytest.raises(UserError, match=r"pose_guider.pth: does not fit MCLD's pose guider .*4 unexpected"):
        load_mcld_release(plain, tmp_path)  # the other guider layout is refused, its keys listed


def test_clip_image_encoder_gives_one_token_per_image(tmp_path):
    encoder = tiny_clip_image_encoder(projection_dim=DIM)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 40, 30, 3), dtype=np.uint8)  # resized, centre-cropped to 32
    from_tensor = encoder(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255)
    from_pil = encoder([Image.fromarray(p) for p in pixels])
    assert from_tensor.shape == (2, 1, DIM) and encoder.dim == DIM
    torch.testing.assert_close(from_tensor, from_pil, rtol=0, atol=1e-5)
    encoder.model.save_pretrained(tmp_path / "image_encoder")  # the sd-image-variations-diffusers layout
    encoder.processor.save_pretrained(tmp_path / "feature_extractor")
    loaded = load_clip_image_encoder(tmp_path)
    assert loaded.processor.crop_size == encoder.processor.crop_size
    torch.testing.assert_close(loaded([Image.fromarray(p) for p in pixels]), from_pil, rtol=0, atol=1e-6)
    with pytest.raises(UserError, match="no config.json"):
        load_clip_image_encoder(tmp_path / "feature_extractor")
