import pytest
import torch

from atelier.diffusion.components import build_tiny_components, load_components
from atelier.diffusion.encode import encode_prompts
from atelier.errors import UserError


def test_tiny_model_is_small_and_reloads_through_the_loader(tiny_model_dir):
    original = build_tiny_components(seed=0)
    assert 0.5e6 < sum(p.numel() for p in original.unet.parameters()) < 2e6
    loaded = load_components(tiny_model_dir)
    assert original.latent_scale == loaded.latent_scale == 4
    text = encode_prompts(loaded.tokenizer, loaded.text_encoder, ["a woman wearing a red striped dress"])
    assert torch.allclose(text, encode_prompts(original.tokenizer, original.text_encoder, ["a woman wearing a red striped dress"]))
    latents = torch.randn(2, 4, 16, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = original.unet(latents, 10, text.expand(2, -1, -1)).sample
        b = loaded.unet(latents, 10, text.expand(2, -1, -1)).sample
    assert torch.allclose(a, b, atol=1e-5)


def test_offline_tokenizer_splits_captions_into_known_tokens():
    tokenizer = build_tiny_components().tokenizer
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a red dress").input_ids)
    assert tokens == ["<|startoftext|>", "a</w>", "red</w>", "dress</w>", "<|endoftext|>"]


def test_directory_missing_parts_is_a_clear_error(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(UserError, match=r"lacks the subfolder\(s\) vae, text_encoder, tokenizer, scheduler"):
        load_components(tmp_path)


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"not really")
    with pytest.raises(UserError, match="only .safetensors"):
        load_components(path)


def test_offline_hub_id_says_how_to_point_at_a_local_directory():
    with pytest.raises(UserError, match="pass the local directory: --model"):
        load_components("someone/not-a-cached-model")


def test_missing_path_is_not_mistaken_for_a_hub_id(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_components(tmp_path / "nope" / "model")


def test_single_safetensors_file_loads_through_diffusers_single_file_loader(tiny_model_dir, tmp_path):
    from atelier.diffusion.export import save_single_file

    original = load_components(tiny_model_dir)
    checkpoint = save_single_file(original, tmp_path / "tiny.safetensors")
    loaded = load_components(checkpoint, config=tiny_model_dir)
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(original, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys(), name
        assert all(torch.equal(a[k], b[k].reshape(a[k].shape)) for k in a), name
    ids = loaded.tokenizer(["a red dress"], return_tensors="pt").input_ids
    assert torch.equal(ids, original.tokenizer(["a red dress"], return_tensors="pt").input_ids)


def test_single_file_that_is_not_a_checkpoint_is_a_clear_error(tiny_model_dir, tmp_path):
    from atelier.utils.io import save_safetensors

    save_safetensors({"something.else": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(UserError, match="other.safetensors could not be loaded"):
        load_components(tmp_path / "other.safetensors", config=tiny_model_dir)
