"""Compiled (numba) loops behind `atelier.metrics.ssim`: one pass per image, no image-sized temporaries.

Each kernel takes a (C, H, W) reference and generated image of one dtype (uint8, or float64 in [0, 1]) and a `unit`
factor that brings values to uint8 code units (1 for uint8, 255 for float), and returns the SSIM map's mean over
the valid positions of every channel, averaged over channels (scikit-image's `channel_axis` mean). Window sums are
kept in float64: for uint8 input every sum and every product in the formula is an integer below 2^53, so they are
exact, and float input gets the running-sum rounding that scipy's filters have too.

The kernels are serial and release the GIL (`nogil=True`): the caller's threads (the evaluation's loader pool) run
several images at once. A `parallel=True` kernel inside those threads would oversubscribe the cores, and the one
threading layer numba always has ("workqueue"; tbb and OpenMP depend on the machine) is not thread-safe.
`cache=True` stores the machine code next to this file, so only the first process on a machine compiles.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _ssim_value(sx: float, sy: float, sq: float, sxy: float, n: float, k: float, c1: float, c2: float) -> float:
    """SSIM at one position from window sums (n = points per window) or weighted means (n = 1), all scaled by n^2.

    sq is the window sum of x^2 + y^2; c1, c2 are already multiplied by n^2 and k is NP/(NP-1) or 1.
    """
    product = sx * sy
    squares = sx * sx + sy * sy
    numerator = (2.0 * product + c1) * (2.0 * k * (n * sxy - product) + c2)
    denominator = (squares + c1) * (k * (n * sq - squares) + c2)
    return numerator / denominator


@njit(cache=True, nogil=True, error_model="numpy")
def _add_row(image_x, image_y, row, unit, sign, sum_x, sum_y, sum_sq, sum_xy) -> None:
    """Add (sign 1) or remove (sign -1) one image row from the running column sums of x, y, x^2 + y^2 and xy."""
    for j in range(image_x.shape[1]):
        x = image_x[row, j] * unit
        y = image_y[row, j] * unit
        sum_x[j] += sign * x
        sum_y[j] += sign * y
        sum_sq[j] += sign * (x * x + y * y)
        sum_xy[j] += sign * (x * y)


@njit(cache=True, nogil=True, error_model="numpy")
def _slide_rows(image_x, image_y, enter, leave, unit, sum_x, sum_y, sum_sq, sum_xy) -> None:
    """Move the running column sums down one row: add row `enter`, remove row `leave`, in one sweep."""
    for j in range(image_x.shape[1]):
        x, y = image_x[enter, j] * unit, image_y[enter, j] * unit
        old_x, old_y = image_x[leave, j] * unit, image_y[leave, j] * unit
        sum_x[j] += x - old_x
        sum_y[j] += y - old_y
        sum_sq[j] += (x * x + y * y) - (old_x * old_x + old_y * old_y)
        sum_xy[j] += x * y - old_x * old_y


@njit(cache=True, nogil=True, error_model="numpy")
def _prefix(sum_x, sum_y, sum_sq, sum_xy, pre_x, pre_y, pre_sq, pre_xy) -> None:
    """pre_q[j] = sum of sum_q[:j] for the four column sums, in one loop so that the four serial chains overlap."""
    run_x = run_y = run_sq = run_xy = 0.0
    pre_x[0] = pre_y[0] = pre_sq[0] = pre_xy[0] = 0.0
    for j in range(sum_x.shape[0]):
        run_x += sum_x[j]
        run_y += sum_y[j]
        run_sq += sum_sq[j]
        run_xy += sum_xy[j]
        pre_x[j + 1], pre_y[j + 1], pre_sq[j + 1], pre_xy[j + 1] = run_x, run_y, run_sq, run_xy


@njit(cache=True, nogil=True, error_model="numpy")
def uniform_ssim(reference, generated, unit: float, size: int, k: float, c1: float, c2: float) -> float:
    """Mean SSIM with a size x size uniform window (scikit-image's `gaussian_weights=False`), C1/C2 in units^2.

    Column sums over the last `size` rows slide down the image; each row of valid positions then takes its
    horizontal window sums from a prefix sum of those columns.
    """
    channels, height, width = reference.shape
    out_h, out_w = height - size + 1, width - size + 1
    n = float(size * size)
    c1, c2 = c1 * n * n, c2 * n * n
    sum_x, sum_y, sum_sq, sum_xy = np.empty(width), np.empty(width), np.empty(width), np.empty(width)
    pre_x, pre_y, pre_sq, pre_xy = np.empty(width + 1), np.empty(width + 1), np.empty(width + 1), np.empty(width + 1)
    column_totals = np.empty(out_w)  # SSIM summed down each column of valid positions: no serial float reduction
    mean = 0.0
    for c in range(channels):
        image_x, image_y = reference[c], generated[c]
        sum_x[:], sum_y[:], sum_sq[:], sum_xy[:] = 0.0, 0.0, 0.0, 0.0
        column_totals[:] = 0.0
        for row in range(size):
            _add_row(image_x, image_y, row, unit, 1.0, sum_x, sum_y, sum_sq, sum_xy)
        for top in range(out_h):
            if top > 0:
                _slide_rows(image_x, image_y, top + size - 1, top - 1, unit, sum_x, sum_y, sum_sq, sum_xy)
            _prefix(sum_x, sum_y, sum_sq, sum_xy, pre_x, pre_y, pre_sq, pre_xy)
            for j in range(out_w):
                end = j + size
                column_totals[j] += _ssim_value(pre_x[end] - pre_x[j], pre_y[end] - pre_y[j],
                                                pre_sq[end] - pre_sq[j], pre_xy[end] - pre_xy[j], n, k, c1, c2)
        mean += column_totals.sum() / (out_h * out_w)
    return mean / channels


@njit(cache=True, nogil=True, error_model="numpy")
def gaussian_ssim(reference, generated, unit: float, taps, k: float, c1: float, c2: float) -> float:
    """Mean SSIM with a separable Gaussian window (`taps`, normalised), C1/C2 in units^2.

    For each row of valid positions the taps weight the rows below it (vertical means over the full width), then
    the taps weight those along each row; scikit-image filters the whole image and crops, which gives the same
    numbers at these positions.
    """
    channels, height, width = reference.shape
    size = taps.shape[0]
    out_h, out_w = height - size + 1, width - size + 1
    mean_x, mean_y, mean_sq, mean_xy = np.empty(width), np.empty(width), np.empty(width), np.empty(width)
    weighted_x, weighted_y, weighted_sq, weighted_xy = np.empty(out_w), np.empty(out_w), np.empty(out_w), np.empty(out_w)
    column_totals = np.empty(out_w)
    mean = 0.0
    for c in range(channels):
        image_x, image_y = reference[c], generated[c]
        column_totals[:] = 0.0
        for top in range(out_h):
            mean_x[:], mean_y[:], mean_sq[:], mean_xy[:] = 0.0, 0.0, 0.0, 0.0
            for t in range(size):
                _add_row(image_x, image_y, top + t, unit, taps[t], mean_x, mean_y, mean_sq, mean_xy)
            weighted_x[:], weighted_y[:], weighted_sq[:], weighted_xy[:] = 0.0, 0.0, 0.0, 0.0
            for t in range(size):  # taps outside, positions inside: the inner loop vectorises
                weight = taps[t]
                for j in range(out_w):
                    weighted_x[j] += weight * mean_x[j + t]
                    weighted_y[j] += weight * mean_y[j + t]
                    weighted_sq[j] += weight * mean_sq[j + t]
                    weighted_xy[j] += weight * mean_xy[j + t]
            for j in range(out_w):
                column_totals[j] += _ssim_value(weighted_x[j], weighted_y[j], weighted_sq[j], weighted_xy[j],
                                                1.0, k, c1, c2)
        mean += column_totals.sum() / (out_h * out_w)
    return mean / channels


@njit(cache=True, nogil=True, error_model="numpy")
def squared_error(reference, generated, unit: float) -> float:
    """Sum of (x - y)^2 in units^2 over the whole image (exact for uint8: an integer below 2^53)."""
    channels, height, width = reference.shape
    per_column = np.zeros(width)  # column-wise accumulation vectorises; a single float sum would not
    for c in range(channels):
        for row in range(height):
            for j in range(width):
                difference = reference[c, row, j] * unit - generated[c, row, j] * unit
                per_column[j] += difference * difference
    return per_column.sum()
