"""Weights come from --weights-dir, the cache or a download, sha256-checked; missing offline is one clear error."""

import hashlib

import pytest

from atelier import weights
from atelier.errors import UserError

pytestmark = pytest.mark.usefixtures("isolated_cache")


def test_missing_weights_offline_name_file_url_and_folder(tmp_path):
    with pytest.raises(weights.WeightsUnavailable) as error:
        weights.resolve("inception_fid", weights_dir=tmp_path / "mine")
    message = str(error.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in message
    assert "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" in message
    assert str(tmp_path / "cache" / "weights") in message and "--weights-dir" in message
    assert "\n" not in message and isinstance(error.value, UserError)


def test_known_weights_have_canonical_urls_and_hash_prefixes():
    for spec in weights.KNOWN_WEIGHTS.values():
        assert spec.url.endswith(spec.filename)
        assert len(spec.sha256_prefix) == 8
        if spec.filename.count("-") and spec.key not in ("lpips_alex", "lpips_vgg"):
            assert spec.filename.rsplit("-", 1)[1].startswith(spec.sha256_prefix)


def test_weights_dir_then_cache_with_sha256_check(tmp_path):
    payload = b"pretend weights"
    digest = hashlib.sha256(payload).hexdigest()
    spec = weights.WeightFile("demo", f"demo-{digest[:8]}.pth", "https://example.invalid/demo.pth", digest[:8], "demo")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / spec.filename).write_bytes(payload)
    assert weights.resolve(spec, weights_dir=mine) == mine / spec.filename
    cached = weights.weights_cache_dir() / spec.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(payload)
    assert weights.resolve(spec) == cached
    cached.write_bytes(b"tampered")
    with pytest.raises(UserError, match="sha256"):
        weights.resolve(spec)


def test_lpips_linear_layers_come_from_torchmetrics_with_pinned_hash():
    path = weights.resolve("lpips_vgg", download=False)
    assert path.name == "vgg.pth" and "torchmetrics" in str(path)
    assert weights.sha256_of(path) == weights.KNOWN_WEIGHTS["lpips_vgg"].sha256
