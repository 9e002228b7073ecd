"""SSIM and PSNR equal scikit-image's for every window the protocols use, on uint8 and float input."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from atelier.metrics.ssim import SSIMEngine, SSIMSettings, gaussian_taps, pair_metrics, psnr, ssim

UNIFORM_51 = SSIMSettings(window="uniform", win_size=51, sample_covariance=True)
GAUSS_255 = SSIMSettings(window="gaussian", sigma=1.5, scale=255.0, data_range=None)
GAUSS_11 = SSIMSettings(window="gaussian", sigma=1.5)
PIDM_256 = SSIMSettings(window="gaussian", sigma=1.2, scale=255.0, data_range=None)


def _pairs(count, height, width, seed=0, bright=False):
    rng = np.random.default_rng(seed)
    # smooth structure plus noise, so local variances range from flat to busy
    y, x = np.mgrid[0:height, 0:width]
    base = 127 + 100 * np.sin(x[None, None] / (5 + rng.random((count, 3, 1, 1)) * 9)) * np.cos(y[None, None] / 11)
    if bright:
        base = 250 + 0 * base
    reference = np.clip(base + rng.normal(0, 6, (count, 3, height, width)), 0, 255).astype(np.uint8)
    generated = np.clip(reference + rng.normal(0, 18, reference.shape), 0, 255).astype(np.uint8)
    return generated, reference


def _reference_ssim(generated, reference, settings):
    """scikit-image on float64 CHW arrays with the flavour's arguments (as CFLD/PIDM/LaDI-VTON call it); uint8 input."""
    return _skimage_ssim(generated.astype(np.float64) / 255, reference.astype(np.float64) / 255, settings)


def _skimage_ssim(generated, reference, settings):
    """scikit-image on float CHW arrays in [0, 1] (scaled by the flavour's `scale`), one value per image."""
    values = []
    for g, r in zip(generated * settings.scale, reference * settings.scale):
        data_range = g.max() - g.min() if settings.data_range is None else settings.data_range
        kwargs = dict(data_range=data_range, channel_axis=0, use_sample_covariance=settings.sample_covariance)
        if settings.window == "uniform":
            kwargs["win_size"] = settings.win_size
        else:
            kwargs.update(gaussian_weights=True, sigma=settings.sigma)
        values.append(structural_similarity(r, g, **kwargs))
    return np.array(values)


@pytest.mark.parametrize("settings", [UNIFORM_51, GAUSS_255, GAUSS_11, PIDM_256], ids=["uniform51", "gauss255", "gauss11", "pidm"])
def test_ssim_equals_scikit_image_on_uint8_and_float(settings):
    generated, reference = _pairs(3, 72, 60)
    expected = _reference_ssim(generated, reference, settings)
    assert np.abs(ssim(generated, reference, settings) - expected).max() < 1e-12
    floats = ssim(generated / 255.0, reference / 255.0, settings)
    assert np.abs(floats - expected).max() < 1e-12


@pytest.mark.parametrize("settings", [UNIFORM_51, GAUSS_11, PIDM_256], ids=["uniform51", "gauss11", "pidm"])
def test_ssim_on_continuous_float_images(settings):
    # values between uint8 steps (PIDM's bilinear resize): the float kernels' running sums must stay exact enough
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:80, 0:66]
    reference = np.clip(0.5 + 0.4 * np.sin(x / 7.0) * np.cos(y / 9.0) + rng.normal(0, 0.05, (2, 3, 80, 66)), 0, 1)
    generated = np.clip(reference + rng.normal(0, 0.1, reference.shape), 0, 1)
    expected = _skimage_ssim(generated, reference, settings)
    assert np.abs(ssim(generated, reference, settings) - expected).max() < 1e-12


def test_ssim_exact_on_bright_512x352_images():
    # bright images at 512x352: sums of x^2 + y^2 over whole rows and columns are large (old int32 integral images
    # wrapped here); ours are exact integers, so any difference is scikit-image's own rounding (~1e-13)
    generated, reference = _pairs(1, 512, 352, seed=1, bright=True)
    expected = _reference_ssim(generated, reference, UNIFORM_51)
    assert abs(ssim(generated, reference, UNIFORM_51)[0] - expected[0]) < 1e-12


@pytest.mark.parametrize("settings", [UNIFORM_51, GAUSS_11], ids=["uniform51", "gauss11"])
def test_window_as_large_as_the_image_and_odd_sizes(settings):
    # one valid position (window = image side) and a window smaller than one side only
    for height, width in ((settings.size, settings.size), (settings.size + 3, settings.size * 2 + 1)):
        generated, reference = _pairs(2, height, width, seed=7)
        expected = _reference_ssim(generated, reference, settings)
        assert np.abs(ssim(generated, reference, settings) - expected).max() < 1e-12


def test_psnr_equals_scikit_image_and_identical_images_give_inf():
    generated, reference = _pairs(3, 40, 36)
    expected = [peak_signal_noise_ratio(r / 255.0, g / 255.0, data_range=1) for g, r in zip(generated, reference)]
    assert np.abs(psnr(generated, reference) - expected).max() < 1e-12
    assert np.abs(psnr(generated / 255.0, reference / 255.0) - expected).max() < 1e-12
    assert np.isinf(psnr(reference, reference)).all()


def test_several_flavours_at_once_and_torch_input():
    generated, reference = _pairs(2, 64, 56, seed=3)
    values, psnr_values = pair_metrics(torch.from_numpy(generated), torch.from_numpy(reference), [UNIFORM_51, GAUSS_255])
    assert values.shape == (2, 2) and psnr_values.shape == (2,)
    assert np.allclose(values[:, 0], _reference_ssim(generated, reference, UNIFORM_51), rtol=0, atol=1e-12)
    assert np.allclose(values[:, 1], _reference_ssim(generated, reference, GAUSS_255), rtol=0, atol=1e-12)


def test_one_engine_serves_several_threads():
    # the kernels release the GIL and the engine keeps no per-image state: threads must get the serial numbers
    generated, reference = _pairs(8, 64, 56, seed=4)
    engine = SSIMEngine((3, 64, 56), [UNIFORM_51, GAUSS_255], integer=True)
    serial = [engine(g, r) for g, r in zip(generated, reference)]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(engine, generated, reference))
    assert threaded == serial


def test_engine_rejects_small_images_and_wrong_shapes():
    with pytest.raises(ValueError, match="smaller than the 51-pixel"):
        SSIMEngine((3, 40, 40), [UNIFORM_51], integer=True)
    engine = SSIMEngine((3, 64, 64), [GAUSS_11], integer=True)
    with pytest.raises(ValueError, match="expected generated of shape"):
        engine(np.zeros((3, 64, 60), np.uint8), np.zeros((3, 64, 60), np.uint8))
    with pytest.raises(ValueError, match="built for uint8 images"):
        engine(np.zeros((3, 64, 64)), np.zeros((3, 64, 64)))


def test_gaussian_taps_match_scipy_and_window_sizes():
    from scipy.ndimage import gaussian_filter1d

    impulse = np.zeros(21)
    impulse[10] = 1
    assert np.allclose(gaussian_filter1d(impulse, 1.5, truncate=3.5)[5:16], gaussian_taps(1.5))
    assert GAUSS_11.size == 11 and PIDM_256.size == 9 and UNIFORM_51.size == 51
    assert "uniform 51x51" in UNIFORM_51.describe() and "max-min" in GAUSS_255.describe()
