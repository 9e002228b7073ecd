"""FashionSynth products: each garment of an identity alone on white, with its catalogue attributes and texts.

A product is drawn by the renderer: the identity wearing only that garment, in a fixed frontal pose with the arms
held out, rendered as a photo; the garment's pixels (its parse label) are cut out, scaled to fit and laid on white.

Categories: FashionIQ knows dresses, shirts and tops/tees, so a dress maps to `dress`, a long-sleeved top to `shirt`
and a short-sleeved top to `toptee`; bottoms (trousers, shorts, skirts) have no FashionIQ category and appear only in
products/, FashionGen and the ground truth. FashionGen categories and subcategories follow CATALOGUE.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from atelier.data.synth.body import GARMENT_LABELS
from atelier.data.synth.identity import PALETTE, Garment, Identity
from atelier.data.synth.poses import (
    FOREARM,
    NECK_Y,
    NOSE_ABOVE_NECK,
    SHIN,
    SHOULDER_DROP,
    THIGH,
    UPPER_ARM,
    to_frame_keypoints,
)
from atelier.data.synth.render import render

KIND_LETTERS = {"top": "T", "bottom": "B", "dress": "D"}
# (kind, cut) -> (FashionIQ category or None, FashionGen category, FashionGen subcategory)
CATALOGUE: dict[tuple[str, str], tuple[str | None, str, str]] = {
    ("dress", "sleeveless"): ("dress", "DRESSES", "SLEEVELESS DRESSES"),
    ("dress", "short-sleeved"): ("dress", "DRESSES", "SHORT SLEEVE DRESSES"),
    ("top", "long-sleeved"): ("shirt", "SHIRTS", "LONG SLEEVE SHIRTS"),
    ("top", "short-sleeved"): ("toptee", "TOPS", "SHORT SLEEVE TOPS"),
    ("bottom", "trousers"): (None, "PANTS", "TROUSERS"),
    ("bottom", "shorts"): (None, "SHORTS", "SHORTS"),
    ("bottom", "skirt"): (None, "SKIRTS", "SKIRTS"),
}
COLOUR_NAMES = {rgb: name for name, rgb in PALETTE.items()}
FILL = 0.88  # share of the image side the garment's longer side fills


@dataclass(frozen=True)
class Product:
    """One garment of one identity as a catalogue item; `asin` (e.g. FS000012T) names it in every layout."""

    asin: str
    identity: Identity
    garment: Garment
    split: str

    @property
    def fashioniq_category(self) -> str | None:
        """`dress`, `shirt`, `toptee`, or None for bottoms."""
        return CATALOGUE[self.garment.kind, self.garment.cut][0]

    @property
    def pattern_phrase(self) -> str:
        """`plain`, or the pattern with its colour: `white stripes`, `black dots`, `pink checks`."""
        if self.garment.pattern == "solid":
            return "plain"
        return f"{COLOUR_NAMES[self.garment.pattern_rgb]} {self.garment.pattern}"

    @property
    def noun(self) -> str:
        """`long-sleeved top`, `short-sleeved top`, `sleeveless dress`, `short-sleeved dress`, `trousers`, `shorts`, `skirt`."""
        return self.garment.cut if self.garment.kind == "bottom" else f"{self.garment.cut} {self.garment.kind}"

    def caption(self) -> str:
        """Absolute caption: `a red long-sleeved top with white stripes`, `black trousers`."""
        words = f"{self.garment.colour} {self.noun}"
        if self.garment.cut not in ("trousers", "shorts"):
            words = ("an " if words[0] in "aeiou" else "a ") + words
        return words if self.garment.pattern == "solid" else f"{words} with {self.pattern_phrase}"

    def name(self) -> str:
        """FashionGen product name: `Red Long-Sleeved Top`."""
        words = f"{self.garment.colour} {self.noun}".split()
        return " ".join("-".join(part.capitalize() for part in word.split("-")) for word in words)

    def description(self) -> str:
        """FashionGen product description from the attributes."""
        pattern = "Solid colour" if self.garment.pattern == "solid" else f"Allover {self.pattern_phrase}"
        return f"{self.caption()[0].upper()}{self.caption()[1:]}. {pattern}. Colour: {self.garment.colour}."

    def attributes(self) -> dict:
        """JSON-ready ground truth: identity, split, garment attributes, categories and texts."""
        garment = self.garment
        _, category, subcategory = CATALOGUE[garment.kind, garment.cut]
        return {
            "identity": self.identity.number, "split": self.split, "gender": self.identity.gender,
            "type": garment.kind, "cut": garment.cut, "noun": self.noun, "colour": garment.colour,
            "rgb": list(garment.rgb), "pattern": garment.pattern,
            "pattern_colour": None if garment.pattern == "solid" else COLOUR_NAMES[garment.pattern_rgb],
            "pattern_phrase": self.pattern_phrase, "fashioniq_category": self.fashioniq_category,
            "fashiongen_category": category, "fashiongen_subcategory": subcategory,
            "caption": self.caption(), "name": self.name(), "description": self.description(),
        }  # fmt: skip


def products_of(identity: Identity, split: str) -> list[Product]:
    """One Product per garment the identity wears (a top and a bottom, or a dress)."""
    return [Product(f"FS{identity.number:06d}{KIND_LETTERS[g.kind]}", identity, g, split) for g in identity.garments]


def product_keypoints(identity: Identity) -> np.ndarray:
    """Frame keypoints int32 (18, 2) of a straight frontal pose, arms held out and legs apart, so garments show whole."""
    points = np.zeros((18, 2))
    points[1] = (NECK_Y, 0.0)
    points[0] = (NECK_Y - NOSE_ABOVE_NECK, 0.0)
    for outward, shoulder, elbow, wrist, hip, knee, ankle, eye, ear in ((-1, 2, 3, 4, 8, 9, 10, 14, 16), (1, 5, 6, 7, 11, 12, 13, 15, 17)):
        points[eye] = points[0] + (-4.0, outward * 5.5)
        points[ear] = points[0] + (-1.0, outward * 10.5)
        points[shoulder] = (NECK_Y + SHOULDER_DROP, outward * identity.shoulder_half)
        arm = np.array([np.cos(np.deg2rad(30.0)), outward * np.sin(np.deg2rad(30.0))])
        points[elbow] = points[shoulder] + UPPER_ARM * arm
        points[wrist] = points[elbow] + FOREARM * arm
        leg = np.array([np.cos(np.deg2rad(6.0)), outward * np.sin(np.deg2rad(6.0))])
        points[hip] = (0.0, outward * identity.hip_half)
        points[knee] = points[hip] + THIGH * leg
        points[ankle] = points[knee] + SHIN * leg
    return to_frame_keypoints(points + (138.0, 88.0))


def render_product(product: Product, size: tuple[int, int], seed: int) -> Image.Image:
    """The product photo at size (W, H): the garment (right colour and pattern, soft shading) centred on pure white."""
    width, height = size
    scale = max(1, int(np.ceil(2 * max(width, height) / 256)))  # the garment spans about half the render
    alone = replace(product.identity, garments=(product.garment,))
    result = render(alone, product_keypoints(alone), (176 * scale, 256 * scale), "photo", seed=seed)
    mask = result.parse == GARMENT_LABELS[product.garment.kind]
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    fit = FILL * min(width / (box[2] - box[0]), height / (box[3] - box[1]))
    fitted = (max(1, round((box[2] - box[0]) * fit)), max(1, round((box[3] - box[1]) * fit)))
    rgb = np.asarray(result.image.crop(box).resize(fitted, Image.Resampling.LANCZOS), dtype=np.float32)
    alpha = Image.fromarray(mask.astype(np.uint8) * 255).crop(box).resize(fitted, Image.Resampling.LANCZOS)
    alpha = np.clip(np.asarray(alpha, dtype=np.float32) / 255.0, 0.0, 1.0)[..., None]
    canvas = np.full((height, width, 3), 255.0, dtype=np.float32)
    left, top = (width - fitted[0]) // 2, (height - fitted[1]) // 2
    canvas[top : top + fitted[1], left : left + fitted[0]] = alpha * rgb + (1.0 - alpha) * 255.0
    return Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
