"""CFLD at tiny size: shapes through every part, zero-initialised parts, trainable parameters, checkpoint key layouts."""

import copy

import pytest
import torch

from atelier.diffusion.components import build_tiny_components
from atelier.errors import UserError
from atelier.methods.cfld.network import CFLD, tiny_cfld_config, up_block_transformers
from atelier.methods.cfld.release import load_cfld_release, load_swin_weights

SIZE = (64, 48)  # the tiny base's images; VAE factor 4 -> latents 16x12
LATENT = (16, 12)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


@pytest.fixture(scope="module")
def unet():
    return build_tiny_components(seed=0).unet


def tiny_cfld(unet, **changes):
    torch.manual_seed(0)
    cfg = tiny_cfld_config()
    for key, value in changes.items():
        setattr(cfg, key, value)
    return CFLD(cfg, copy.deepcopy(unet), SIZE)


def inputs(batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    source = torch.rand(batch, 3, *SIZE, generator=generator) * 2 - 1
    pose = torch.rand(batch, 21, *SIZE, generator=generator)
    latents = torch.randn(batch, 4, *LATENT, generator=generator)
    return source, pose, latents


def test_up_block_transformers_follow_cfld_numbering(unet):
    found = up_block_transformers(unet)  # tiny: up-block 0 has no attention, blocks 1 and 2 have two each
    assert [t.index for t in found] == [5, 4, 3, 2]
    assert [t.level for t in found] == [0, 0, 1, 1]
    assert found[0].attn2 == "up_blocks.2.attentions.1.transformer_blocks.0.attn2"


def test_shapes_through_every_part(unet):
    model = tiny_cfld(unet)
    source, pose, latents = inputs()
    features = model.appearance(source)
    assert [tuple(f.shape) for f in features] == [(2, 16, 16, 12), (2, 32, 8, 6)]  # stage maps before merging
    assert model.decoder(features[-1]).shape == (2, 8, 64)  # 8 queries x the UNet's context width
    biases = model.hybrid_attention(features, LATENT)
    assert {k: tuple(v.shape) for k, v in biases.items()} == {5: (2, 192, 32), 4: (2, 192, 32), 3: (2, 48, 32), 2: (2, 48, 32)}
    assert [tuple(f.shape) for f in model.pose_adapter(pose)] == [(2, 32, 16, 12), (2, 32, 8, 6)]
    cond = model.condition(source, torch.cat([pose, pose]), LATENT)  # two poses per source, as in training
    assert cond.context.shape == (4, 8, 64) and cond.query_bias[5].shape == (4, 192, 32)
    out = model(torch.cat([latents, latents]), torch.tensor([10, 500, 10, 500]), cond.context, cond.pose_features, cond.query_bias)
    assert out.sample.shape == (4, 4, *LATENT) and model.null_context(3).shape == (3, 8, 64)


def test_zero_initialised_parts_leave_the_unet_output_unchanged(unet):
    model = tiny_cfld(unet)
    source, pose, latents = inputs()
    t = torch.tensor([10, 700])
    with torch.no_grad():
        cond = model.condition(source, pose, LATENT)
        assert all(float(b.abs().max()) == 0 for b in cond.query_bias.values())
        ours = model(latents, t, cond.context, cond.pose_features, cond.query_bias).sample
        plain = unet(latents, t, cond.context, down_intrablock_additional_residuals=list(cond.pose_features)).sample
    torch.testing.assert_close(ours, plain, rtol=0, atol=1e-5)
    with torch.no_grad():  # a non-zero bias does reach the up blocks through the processors
        shifted = model(latents, t, cond.context, cond.pose_features, {5: torch.full((2, 192, 32), 10.0)}).sample
    assert float((shifted - plain).abs().max()) > 1e-3


def test_trainable_parameters_default_to_the_paper_and_are_configurable(unet):
    model = tiny_cfld(unet)
    trained = {name for name, p in model.unet.named_parameters() if p.requires_grad}
    assert trained and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in trained)
    assert all(n.startswith("up_blocks.") for n in trained) and len(trained) == 8
    assert all(p.requires_grad for name, p in model.named_parameters() if not name.startswith("unet."))
    whole = tiny_cfld(unet, unet_trainable=["*"])
    assert all(p.requires_grad for p in whole.unet.parameters())


def test_gradients_reach_every_part_with_gradient_checkpointing(unet):
    model = tiny_cfld(unet)
    model.enable_gradient_checkpointing()
    model.train()
    source, pose, latents = inputs()
    cond = model.condition(source, pose, LATENT)
    out = model(latents, torch.tensor([10, 700]), cond.context, cond.pose_features, cond.query_bias).sample
    out.square().mean().backward()
    assert model.hybrid_attention.zero_conv_outs[0].weight.grad.abs().sum() > 0  # through the query-bias processor
    for part in (model.appearance, model.decoder, model.pose_adapter):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert model.unet.up_blocks[2].attentions[0].transformer_blocks[0].attn2.to_k.weight.grad.abs().sum() > 0


def official_swin_state(embed=16, depths=(2, 2), heads=(1, 2), window=4, head_classes=10):
    """A state dict with the official Swin layout (microsoft/Swin-Transformer names), random values."""
    generator = torch.Generator().manual_seed(1)

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    state = {"patch_embed.proj.weight": rand(embed, 3, 4, 4), "patch_embed.proj.bias": rand(embed),
             "patch_embed.norm.weight": rand(embed), "patch_embed.norm.bias": rand(embed)}
    for i, (depth, head) in enumerate(zip(depths, heads)):
        dim = embed * 2**i
        for j in range(depth):
            block = f"layers.{i}.blocks.{j}."
            for norm in ("norm1", "norm2"):
                state[block + f"{norm}.weight"], state[block + f"{norm}.bias"] = rand(dim), rand(dim)
            state[block + "attn.relative_position_bias_table"] = rand((2 * window - 1) ** 2, head)
            state[block + "attn.relative_position_index"] = torch.zeros(window**2, window**2, dtype=torch.long)
            state[block + "attn.qkv.weight"], state[block + "attn.qkv.bias"] = rand(3 * dim, dim), rand(3 * dim)
            state[block + "attn.proj.weight"], state[block + "attn.proj.bias"] = rand(dim, dim), rand(dim)
            state[block + "mlp.fc1.weight"], state[block + "mlp.fc1.bias"] = rand(4 * dim, dim), rand(4 * dim)
            state[block + "mlp.fc2.weight"], state[block + "mlp.fc2.bias"] = rand(dim, 4 * dim), rand(dim)
            if j % 2:
                state[block + "attn_mask"] = torch.zeros(4, window**2, window**2)
        if i < len(depths) - 1:
            state[f"layers.{i}.downsample.reduction.weight"] = rand(2 * dim, 4 * dim)
            state[f"layers.{i}.downsample.norm.weight"], state[f"layers.{i}.downsample.norm.bias"] = rand(4 * dim), rand(4 * dim)
    if head_classes:
        final = embed * 2 ** (len(depths) - 1)
        state.update({"norm.weight": rand(final), "norm.bias": rand(final), "head.weight": rand(head_classes, final),
                      "head.bias": rand(head_classes)})
    return state


def test_official_swin_layout_loads_into_the_transformers_backbone(unet, tmp_path):
    model = tiny_cfld(unet)
    state = official_swin_state()
    torch.save({"model": state}, tmp_path / "swin.pth")
    load_swin_weights(model.appearance, tmp_path / "swin.pth")
    block = model.appearance.encoder.layers[1].blocks[1]
    qkv_w, qkv_b = state["layers.1.blocks.1.attn.qkv.weight"], state["layers.1.blocks.1.attn.qkv.bias"]
    assert torch.equal(block.attention.q_proj.weight, qkv_w[:32]) and torch.equal(block.attention.k_proj.weight, qkv_w[32:64])
    assert torch.equal(block.attention.v_proj.bias, qkv_b[64:])
    assert torch.equal(block.attention.o_proj.weight, state["layers.1.blocks.1.attn.proj.weight"])
    assert torch.equal(block.layernorm_before.weight, state["layers.1.blocks.1.norm1.weight"])
    assert torch.equal(block.mlp.fc2.weight, state["layers.1.blocks.1.mlp.fc2.weight"])
    assert torch.equal(model.appearance.encoder.layers[0].downsample.reduction.weight, state["layers.0.downsample.reduction.weight"])
    assert torch.equal(model.appearance.embeddings.patch_embeddings.projection.weight, state["patch_embed.proj.weight"])
    table = block.attention.relative_position_bias.relative_position_bias_table
    assert torch.equal(table, state["layers.1.blocks.1.attn.relative_position_bias_table"])
    torch.save({"model": official_swin_state(window=3)}, tmp_path / "window3.pth")  # a 5x5 table, resized to 7x7
    load_swin_weights(model.appearance, tmp_path / "window3.pth")
    assert table.shape == (49, 2)
    torch.save({"model": official_swin_state(embed=8)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="does not fit this CFLD configuration: shapes differ"):
        load_swin_weights(model.appearance, tmp_path / "other.pth")


def test_cfld_release_layout_loads_into_our_modules(unet, tmp_path):
    model = tiny_cfld(unet)
    generator = torch.Generator().manual_seed(2)
    release = {f"backbone.{k}": v for k, v in official_swin_state(head_classes=0).items()}
    for theirs, ours in (("appearance_encoder", model.hybrid_attention), ("pose_encoder", model.pose_adapter), ("decoder", model.decoder)):
        release.update({f"{theirs}.{k}": torch.randn(v.shape, generator=generator) for k, v in ours.state_dict().items()})
    release["learnable_vector"] = torch.randn(1, 8, 64, generator=generator)
    for name in ("appearance_encoder.zero_conv_ins.0.weight", "appearance_encoder.zero_conv_outs.3.bias",
                 "appearance_encoder.blocks.0.0.attn1.to_q.weight", "appearance_encoder.blocks.3.0.attn2.to_out.0.bias",
                 "pose_encoder.conv_in.weight", "pose_encoder.resnets.1.conv2.weight", "decoder.query_feat",
                 "decoder.pos_embed", "decoder.kv_pos_embed", "decoder.blocks.1.attn2.to_k.weight",
                 "decoder.blocks.0.ff.net.0.proj.weight", "decoder.blocks.0.norm3.bias"):
        assert name in release, name  # CFLD's own names (models/appearance_encoder.py, pose_encoder.py, decoder.py)
    unet_state = {f"model.{k}": torch.randn(v.shape, generator=generator) for k, v in model.unet.state_dict().items()}
    torch.save(release, tmp_path / "pytorch_model.bin")
    torch.save(unet_state, tmp_path / "pytorch_model_1.bin")
    load_cfld_release(model, tmp_path)
    assert torch.equal(model.null_prompt, release["learnable_vector"])
    assert torch.equal(model.decoder.kv_pos_embed, release["decoder.kv_pos_embed"])
    assert torch.equal(model.hybrid_attention.zero_conv_ins[0].weight, release["appearance_encoder.zero_conv_ins.0.weight"])
    assert torch.equal(model.pose_adapter.resnets[1].conv2.weight, release["pose_encoder.resnets.1.conv2.weight"])
    assert torch.equal(model.unet.conv_in.weight, unet_state["model.conv_in.weight"])
    q = model.appearance.encoder.layers[0].blocks[0].attention.q_proj.weight
    assert torch.equal(q, release["backbone.layers.0.blocks.0.attn.qkv.weight"][:16])
    del release["learnable_vector"]
    torch.save(release, tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"1 missing \(first: \['null_prompt'\]\)"):
        load_cfld_release(model, tmp_path)
