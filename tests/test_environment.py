"""Installed packages: LoRA injection and loading through PEFT itself (no wrapper's version gate), version-gate errors
reported as clashing packages, `atelier doctor` (tiny models, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier import cli
from atelier.diffusion.components import build_tiny_components
from atelier.diffusion.lora import TEXT_ENCODER_TARGETS, add_lora, load_lora, save_lora
from atelier.environment import KnownIssue, known_issues, lock_pins, version_clash, versions
from atelier.errors import DependencyError, UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def text_output(text_encoder: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return text_encoder(torch.arange(2, 18).reshape(2, 8))[0]


def randomise_lora(*models: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for model in models:
            for name, param in model.named_parameters():
                if ".lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


@pytest.fixture(scope="module")
def text_encoder_lora(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """A saved LoRA on the UNet and the text encoder (r 4, alpha 6, random weights) and the text encoder's output."""
    components = build_tiny_components()
    add_lora(components.unet, 4, 6.0, 0.0, ["to_q", "to_v"])
    add_lora(components.text_encoder, 4, 6.0, 0.0, TEXT_ENCODER_TARGETS)
    randomise_lora(components.unet, components.text_encoder)
    folder = tmp_path_factory.mktemp("te-lora")
    save_lora(folder, components.unet, components.text_encoder)
    return folder, text_output(components.text_encoder)


def test_text_encoder_lora_is_injected_by_peft_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers' add_adapter gate (a PEFT newer than installed) must not decide whether atelier trains a LoRA."""
    import transformers.integrations.peft as hf_peft

    monkeypatch.setattr(hf_peft, "MIN_PEFT_VERSION", "999.0")
    text_encoder = build_tiny_components().text_encoder
    params = add_lora(text_encoder, 4, 8.0, 0.0, TEXT_ENCODER_TARGETS)
    assert params and all(param.requires_grad for param in params)
    assert set(text_encoder.peft_config) == {"default"}


def test_text_encoder_lora_round_trip_without_transformers_gate(text_encoder_lora, monkeypatch) -> None:
    import transformers.integrations.peft as hf_peft

    folder, expected = text_encoder_lora
    monkeypatch.setattr(hf_peft, "MIN_PEFT_VERSION", "999.0")  # diffusers' text-encoder loader would fail here
    fresh = build_tiny_components()
    base = text_output(fresh.text_encoder)
    load_lora(fresh.unet, fresh.text_encoder, folder, adapter_name="style")
    loaded = text_output(fresh.text_encoder)
    assert (loaded - base).abs().max() > 1e-3  # the LoRA changes the embeddings...
    torch.testing.assert_close(loaded, expected, rtol=0, atol=1e-6)  # ...exactly as saved (alpha 6 from the metadata)
    assert fresh.text_encoder.peft_config["style"].lora_alpha == 6


def test_text_encoder_lora_matches_diffusers_own_loader(text_encoder_lora) -> None:
    from diffusers import StableDiffusionPipeline

    if any(issue.packages == ("transformers", "peft") for issue in known_issues()):
        pytest.skip("installed transformers refuses the installed PEFT in load_adapter, which diffusers' loader calls "
                    "(see `atelier doctor`); atelier's own loader is tested above")
    folder, expected = text_encoder_lora
    theirs = build_tiny_components()
    pipe = StableDiffusionPipeline(vae=theirs.vae, text_encoder=theirs.text_encoder, tokenizer=theirs.tokenizer,
                                   unet=theirs.unet, scheduler=theirs.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.load_lora_weights(str(folder))
    torch.testing.assert_close(text_output(theirs.text_encoder), expected, rtol=0, atol=1e-6)


def failing_gate(*args, **kwargs):
    """PEFT's injection behind a gate demanding a PEFT newer than any release (the real gate function of transformers)."""
    from transformers.utils.peft_utils import check_peft_version

    check_peft_version(min_version="999.0")


def test_version_gate_is_reported_as_a_package_clash(monkeypatch: pytest.MonkeyPatch) -> None:
    import peft

    monkeypatch.setattr(peft, "inject_adapter_in_model", failing_gate)
    with pytest.raises(DependencyError) as caught:
        add_lora(build_tiny_components().text_encoder, 4, 8.0, 0.0, TEXT_ENCODER_TARGETS)
    message = str(caught.value)
    assert "lora.target_modules" not in message
    assert f"peft {versions()['peft']}" in message and f"transformers {versions()['transformers']}" in message
    assert "999.0" in message and "requirements/lock.txt" in message


def test_version_gate_while_loading_is_not_blamed_on_the_file(text_encoder_lora, monkeypatch) -> None:
    import peft

    monkeypatch.setattr(peft, "inject_adapter_in_model", failing_gate)
    fresh = build_tiny_components()
    with pytest.raises(DependencyError, match=r"installed packages clash \(.*peft") as caught:
        load_lora(fresh.unet, fresh.text_encoder, text_encoder_lora[0])
    assert "does not fit" not in str(caught.value)


def test_unknown_target_is_still_the_users_mistake() -> None:
    with pytest.raises(UserError, match=r"lora.target_modules \['nope'\].*Linear"):
        add_lora(build_tiny_components().unet, 4, 8.0, 0.0, ["nope"])


def test_other_library_errors_keep_their_type(monkeypatch: pytest.MonkeyPatch) -> None:
    import peft

    def broken(*args, **kwargs):
        raise ValueError("some internal PEFT failure")

    monkeypatch.setattr(peft, "inject_adapter_in_model", broken)
    with pytest.raises(ValueError, match="internal PEFT failure") as caught:
        add_lora(build_tiny_components().unet, 4, 8.0, 0.0, ["to_q"])
    assert not isinstance(caught.value, UserError)


def test_version_clash_ignores_ordinary_errors() -> None:
    assert version_clash(ValueError("Target modules {'x'} not found in the base model")) is None
    assert version_clash(RuntimeError("size mismatch for weight")) is None


def test_known_issue_rule() -> None:
    found = {"transformers": "5.24.0", "peft": "0.21.2"}
    assert [issue.packages for issue in known_issues(found)] == [("transformers", "peft")]
    assert known_issues({"transformers": "5.23.0", "peft": "0.21.2"}) == []
    assert known_issues({"transformers": "5.24.1", "peft": "0.22.0"}) == []
    assert isinstance(known_issues(found)[0], KnownIssue)


def test_lock_is_read_and_pins_the_core_packages() -> None:
    pins = lock_pins()
    if not pins:
        pytest.skip("no requirements/lock.txt beside this install (a wheel install, not a source checkout)")
    assert {"diffusers", "transformers", "peft", "accelerate"} <= set(pins)
    assert "torch" not in pins  # torch is the local CPU wheel, installed first


def test_doctor_prints_versions_and_device(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["doctor"])
    out = capsys.readouterr().out
    for name in ("torch", "diffusers", "transformers", "peft", "accelerate", "device"):
        assert name in out
    assert code == (1 if known_issues() else 0)


def test_cli_reports_a_dependency_error_on_one_line(monkeypatch, capsys) -> None:
    from atelier.commands import doctor

    def clash(args):
        raise DependencyError("installed packages clash (peft 0.1)")

    monkeypatch.setattr(doctor, "run", clash)
    assert cli.main(["doctor"]) == 1
    assert capsys.readouterr().err.strip() == "atelier doctor: error: installed packages clash (peft 0.1)"
