"""The protocols' resize recipes: CFLD's truncating quantisation, PIDM's OpenCV-style bilinear, clean-fid's resize."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from atelier.errors import UserError
from atelier.metrics.images import cfld_generated, clean_resize_299, list_images, parse_size, pidm_image, pil_resize


def _image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def test_cfld_generated_truncates_and_keeps_test_size_images():
    image = _image(512, 352)
    out = cfld_generated(image, (256, 176))
    floats = torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy()).float()[None] / 255
    resized = F.interpolate(floats, size=(256, 176), mode="bicubic", antialias=True)[0] * 255
    assert out.dtype == np.uint8 and out.shape == (3, 256, 176)
    assert np.array_equal(out, resized.clamp(0, 255).floor().to(torch.uint8).numpy())  # truncation, not rounding
    small = _image(256, 176, seed=1)
    assert np.array_equal(cfld_generated(small, (256, 176)), np.asarray(small).transpose(2, 0, 1))


def _cv2_inter_linear(array, height, width):
    """An independent numpy transcription of OpenCV's INTER_LINEAR sampling for float input (no antialias)."""
    def axis_weights(src, dst):
        scale = src / dst
        coords = (np.arange(dst) + 0.5) * scale - 0.5
        coords = np.clip(coords, 0, None)
        low = np.minimum(np.floor(coords).astype(int), src - 1)
        high = np.minimum(low + 1, src - 1)
        return low, high, coords - low

    y0, y1, fy = axis_weights(array.shape[0], height)
    x0, x1, fx = axis_weights(array.shape[1], width)
    rows = array[y0] * (1 - fy)[:, None, None] + array[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def test_pidm_chain_is_square_png_then_opencv_bilinear():
    image = _image(1101, 750)
    out = pidm_image(image, (256, 176))
    square = np.asarray(image.resize((256, 256), Image.Resampling.BICUBIC)).astype(np.float32)
    expected = _cv2_inter_linear(square, 256, 176).transpose(2, 0, 1) / 255
    assert out.dtype == np.float32 and out.shape == (3, 256, 176)
    assert np.abs(out - expected).max() < 1e-5


def test_clean_resize_and_pil_resize():
    image = _image(120, 90)
    clean = clean_resize_299(image)
    assert clean.shape == (3, 299, 299) and clean.dtype == np.float32 and clean.max() > 200
    assert not np.allclose(clean, np.round(clean))  # float values: no quantisation in clean mode
    assert pil_resize(image, (64, 48), "bilinear").shape == (3, 64, 48)


def test_parse_size_and_listing(tmp_path):
    assert parse_size("256x176") == (256, 176)
    with pytest.raises(UserError, match="--test-size"):
        parse_size("256")
    with pytest.raises(UserError, match="no images found"):
        list_images(tmp_path, "--generated")
    with pytest.raises(UserError, match="not a folder"):
        list_images(tmp_path / "nope", "--real")
