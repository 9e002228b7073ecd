"""Render an identity in a pose: part map -> parse labels, garment mask, and a "photo" or an "illustration" image.

Photo: base colours and patterns, soft shading (darker towards every part edge, light from the upper left), a soft
floor shadow, a slight blur and mild sensor noise. Illustration of the same picture: flat colours, dark ink outlines
along part boundaries, faint warm paper grain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from atelier.data.pose import validate_keypoints
from atelier.data.synth.body import BOTTOM, DRESS, TOP, Skeleton, complete_skeleton, paint_figure
from atelier.data.synth.identity import Identity
from atelier.data.synth.shapes import Canvas
from atelier.errors import UserError

logger = logging.getLogger(__name__)

Rendition = Literal["photo", "illustration"]
INK = np.array([46, 36, 34], dtype=np.float32)
PAPER = np.array([250, 243, 228], dtype=np.float32)


@dataclass
class RenderResult:
    """One rendered picture and its labels: parse map uint8 (H, W) with labels 0-7, garment mask bool (H, W)."""

    image: Image.Image
    parse: np.ndarray
    garment_mask: np.ndarray


def _pattern_weight(kind: str, along: np.ndarray, across: np.ndarray, period: float) -> np.ndarray:
    """Share of the pattern colour per pixel (0 = garment colour, 1 = pattern colour) in body coordinates."""
    if kind == "stripes":
        return ((along % period) < 0.42 * period).astype(np.float32)
    if kind == "dots":
        row = np.floor(along / period)
        shifted = across + 0.5 * period * (row % 2)  # staggered rows
        dy = along - (row + 0.5) * period
        dx = shifted - (np.floor(shifted / period) + 0.5) * period
        return (dy * dy + dx * dx <= (0.24 * period) ** 2).astype(np.float32)
    if kind == "checks":  # gingham: half-tone where one band crosses, full where both do
        return 0.5 * ((along % period) < 0.5 * period) + 0.5 * ((across % period) < 0.5 * period)
    return np.zeros_like(along, dtype=np.float32)


def base_colours(canvas: Canvas, identity: Identity, skeleton: Skeleton | None) -> np.ndarray:
    """Per-pixel colour float32 (H, W, 3): each part's colour, with garment patterns laid out along the body axes."""
    table = np.array([part.rgb for part in canvas.parts], dtype=np.float32)
    colours = canvas.lookup(table)
    if skeleton is None:
        return colours
    ys, xs = np.mgrid[0 : canvas.height, 0 : canvas.width].astype(np.float32)
    ys -= np.float32(skeleton.points[1, 0])
    xs -= np.float32(skeleton.points[1, 1])
    along = ys * np.float32(skeleton.down[0]) + xs * np.float32(skeleton.down[1])
    across = ys * np.float32(skeleton.side[0]) + xs * np.float32(skeleton.side[1])
    for index, garment in enumerate(identity.garments):
        ids = [i for i, part in enumerate(canvas.parts) if part.garment == index]
        inside = np.isin(canvas.ids, ids)
        if garment.pattern == "solid" or not inside.any():
            continue
        weight = _pattern_weight(garment.pattern, along[inside], across[inside], garment.pattern_period * skeleton.unit)
        colours[inside] += weight[:, None] * (np.array(garment.pattern_rgb, dtype=np.float32) - colours[inside])
    return colours


def _edges(ids: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour belongs to another part."""
    edges = np.zeros(ids.shape, dtype=bool)
    edges[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edges[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return edges


def _photo(colours: np.ndarray, canvas: Canvas, background: np.ndarray, unit: float, rng: np.random.Generator) -> Image.Image:
    """Shade, shadow, soften and add noise to the flat colours."""
    height, width = canvas.ids.shape
    figure = canvas.ids > 0
    distance = ndimage.distance_transform_edt(~_edges(canvas.ids)).astype(np.float32)
    rounding = 0.74 + 0.26 * np.sqrt(np.clip(distance / (7.0 * unit), 0.0, 1.0))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 1.06 - 0.10 * xs / width - 0.06 * ys / height
    shade = np.where(figure, rounding * light, 1.0)
    shadow = Image.fromarray((figure * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(5 * unit))
    offset = max(int(round(4 * unit)), 1)
    shadow = np.pad(np.asarray(shadow, dtype=np.float32) / 255.0, ((offset, 0), (offset, 0)))[:height, :width]
    floor = (1.04 - 0.10 * ys / height) * (1.0 - 0.22 * shadow)
    image = np.where(figure[..., None], colours * shade[..., None], background * floor[..., None])
    image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.5 * max(unit, 0.6)))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 2.5, size=(height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))


def _illustration(colours: np.ndarray, canvas: Canvas, background: np.ndarray, unit: float, rng: np.random.Generator) -> Image.Image:
    """Flat colours, ink outlines along part boundaries, warm paper grain."""
    figure = canvas.ids > 0
    image = np.where(figure[..., None], colours, 0.5 * background + 0.5 * PAPER)
    ink = _edges(canvas.ids)
    if unit >= 0.75:  # two pixels wide at full size, one when small
        ink[1:, :] |= ink[:-1, :]
        ink[:, 1:] |= ink[:, :-1]
    image[ink] = INK
    grain = ndimage.gaussian_filter(rng.standard_normal(canvas.ids.shape).astype(np.float32), 0.8)
    grain *= 0.03 / max(float(grain.std()), 1e-6)
    image = image * (1.0 + grain[..., None]) * np.array([1.0, 0.985, 0.95], dtype=np.float32)
    return Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8))


def layout(identity: Identity, keypoints, size: tuple[int, int]) -> tuple[Canvas, Skeleton | None]:
    """The painted part map of `identity` in the pose of 18 frame keypoints (y, x; -1 missing) at size (W, H), and the
    completed skeleton (None, and an empty canvas, when the torso is unknown)."""
    width, height = size
    canvas = Canvas(height, width)
    skeleton = complete_skeleton(validate_keypoints(keypoints, "render keypoints"), (height, width))
    if skeleton is None:
        logger.debug("render: neck and shoulders missing; drawing the background only")
    else:
        paint_figure(canvas, identity, skeleton)
    return canvas, skeleton


def render(
    identity: Identity, keypoints, size: tuple[int, int], rendition: Rendition = "photo", seed: int = 0
) -> RenderResult:
    """Draw `identity` in the pose of 18 frame keypoints (y, x; -1 missing) at size (W, H) as a photo or illustration."""
    keypoints = validate_keypoints(keypoints, "render keypoints")
    if rendition not in ("photo", "illustration"):
        raise UserError(f"rendition: expected 'photo' or 'illustration'; got {rendition!r}")
    canvas, skeleton = layout(identity, keypoints, size)
    height = size[1]
    labels = np.array([part.label for part in canvas.parts], dtype=np.uint8)
    parse = canvas.lookup(labels)
    colours = base_colours(canvas, identity, skeleton)
    background = np.array(identity.background_rgb, dtype=np.float32)
    unit = skeleton.unit if skeleton is not None else height / 256
    finish = _photo if rendition == "photo" else _illustration
    image = finish(colours, canvas, background, unit, np.random.default_rng(seed))
    return RenderResult(image, parse, np.isin(parse, (TOP, BOTTOM, DRESS)))
