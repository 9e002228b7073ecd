"""The autoencoder task's from-scratch start (`init`) and reconstruction loss options."""

from __future__ import annotations

import torch

from atelier.diffusion.components import build_tiny_components
from atelier.training.tasks.autoencoder import AutoencoderInitConfig, initialise_vae


def test_defaults_keep_the_weights_as_built() -> None:
    vae = build_tiny_components(seed=0).vae
    before = {name: value.clone() for name, value in vae.state_dict().items()}
    initialise_vae(vae, AutoencoderInitConfig())
    assert all(torch.equal(before[name], value) for name, value in vae.state_dict().items())


def test_zero_residuals_make_every_resnet_and_attention_block_the_identity() -> None:
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D

    vae = build_tiny_components(seed=0).vae
    initialise_vae(vae, AutoencoderInitConfig(zero_residuals=True))
    blocks = [m for m in vae.modules() if isinstance(m, ResnetBlock2D) and m.conv_shortcut is None]
    assert blocks
    x = torch.randn(2, blocks[0].in_channels, 8, 8)
    with torch.no_grad():
        assert torch.allclose(blocks[0](x, None), x / blocks[0].output_scale_factor)
        attention = next(m for m in vae.modules() if isinstance(m, Attention))
        y = torch.randn(2, attention.to_q.in_features, 4, 4)
        assert torch.allclose(attention(y), y / attention.rescale_output_factor)


def test_posterior_logvar_sets_a_near_deterministic_posterior_for_every_input() -> None:
    vae = build_tiny_components(seed=0).vae
    initialise_vae(vae, AutoencoderInitConfig(posterior_logvar=-8.0))
    with torch.no_grad():
        posterior = vae.encode(torch.rand(2, 3, 32, 32) * 2 - 1).latent_dist
    assert torch.allclose(posterior.logvar, torch.full_like(posterior.logvar, -8.0))
    assert posterior.std.max() < 0.02
