"""FashionSynth identities: who is drawn (body, skin, hair, background) and what they wear (garments, colours, patterns)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

RGB = tuple[int, int, int]

# Named garment colours: the names appear in captions and attributes, so they are kept visually distinct.
PALETTE: dict[str, RGB] = {
    "red": (196, 36, 44),
    "blue": (36, 78, 186),
    "green": (34, 136, 72),
    "yellow": (236, 198, 46),
    "black": (34, 34, 38),
    "white": (238, 238, 232),
    "pink": (236, 138, 178),
    "purple": (116, 58, 150),
    "orange": (236, 120, 30),
    "grey": (132, 134, 140),
}
PATTERNS = ("solid", "stripes", "dots", "checks")
PATTERN_WORDS = {"solid": "", "stripes": "striped", "dots": "dotted", "checks": "checked"}
SKIN_TONES: tuple[RGB, ...] = ((247, 214, 190), (236, 192, 160), (214, 164, 126), (184, 130, 96), (140, 94, 66), (104, 68, 48))
HAIR_COLOURS: tuple[RGB, ...] = ((30, 24, 22), (66, 44, 30), (112, 74, 42), (196, 160, 100), (150, 62, 36), (150, 146, 140))
SHOE_COLOURS: tuple[RGB, ...] = ((30, 30, 34), (92, 60, 40), (236, 236, 232), (150, 30, 40))
VIEW_NUMBERS = {"front": 1, "back": 3}  # DeepFashion view codes: 1 front, 2 side, 3 back, 4 full, 7 additional

GarmentKind = Literal["top", "bottom", "dress"]


@dataclass(frozen=True)
class Garment:
    """One garment: kind, cut (`short-sleeved`, `long-sleeved`, `sleeveless`, `trousers`, `shorts`, `skirt`), colour, pattern."""

    kind: GarmentKind
    cut: str
    colour: str
    rgb: RGB
    pattern: Literal["solid", "stripes", "dots", "checks"]
    pattern_rgb: RGB
    pattern_period: float  # in 256x176 frame pixels

    @property
    def noun(self) -> str:
        """The caption's word for it: top, long-sleeved top, dress, trousers, shorts, skirt."""
        if self.kind == "top":
            return "long-sleeved top" if self.cut == "long-sleeved" else "top"
        return "dress" if self.kind == "dress" else self.cut


@dataclass(frozen=True)
class Identity:
    """A person: body shape, skin, hair, shoes, background and garments; render() draws them in any pose."""

    number: int
    gender: Literal["WOMEN", "MEN"]
    category: str  # DeepFashion product category, e.g. Dresses, Tees_Tanks, Pants
    garments: tuple[Garment, ...]
    skin_rgb: RGB
    hair_rgb: RGB
    hair_style: Literal["short", "long", "bun"]
    shoe_rgb: RGB
    background_rgb: RGB
    shoulder_half: float  # half shoulder width, frame pixels at scale 1
    hip_half: float
    build: float  # limb thickness multiplier

    def garment(self, kind: GarmentKind) -> Garment | None:
        """The garment of this kind, or None."""
        return next((g for g in self.garments if g.kind == kind), None)

    def attributes(self) -> dict:
        """JSON-ready attributes (gender, category, garments, colours, body)."""
        record = {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items() if k != "number"}
        record["garments"] = [
            {"type": g.kind, "cut": g.cut, "noun": g.noun, "colour": g.colour, "rgb": list(g.rgb), "pattern": g.pattern,
             "pattern_rgb": list(g.pattern_rgb), "pattern_period": round(g.pattern_period, 3)}
            for g in self.garments
        ]  # fmt: skip
        return record


def _contrast_rgb(rng: np.random.Generator, base: str) -> RGB:
    """A second colour for a pattern: light on dark garments, dark on light ones."""
    luminance = np.dot(PALETTE[base], (0.299, 0.587, 0.114))
    options = ("white", "yellow", "pink") if luminance < 120 else ("black", "blue", "purple")
    options = tuple(o for o in options if o != base)
    return PALETTE[options[int(rng.integers(len(options)))]]


def _sample_garment(rng: np.random.Generator, kind: GarmentKind, cut: str, avoid: str | None, pattern_p: float) -> Garment:
    """Draw a colour (not `avoid`) and a pattern (solid with probability 1 - pattern_p) for one garment."""
    names = [name for name in PALETTE if name != avoid]
    colour = names[int(rng.integers(len(names)))]
    pattern = "solid" if rng.random() > pattern_p else PATTERNS[1 + int(rng.integers(3))]
    period = float(rng.uniform(9.0, 14.0))
    return Garment(kind, cut, colour, PALETTE[colour], pattern, _contrast_rgb(rng, colour), period)


def _sample_outfit(rng: np.random.Generator, gender: str) -> tuple[str, tuple[Garment, ...]]:
    """Choose a dress or a top and a bottom, and the DeepFashion category that names the product."""
    if gender == "WOMEN" and rng.random() < 0.4:
        dress = _sample_garment(rng, "dress", ["sleeveless", "short-sleeved"][int(rng.integers(2))], None, 0.65)
        return "Dresses", (dress,)
    top = _sample_garment(rng, "top", ["short-sleeved", "long-sleeved"][int(rng.integers(2))], None, 0.65)
    bottoms = ("trousers", "shorts", "skirt") if gender == "WOMEN" else ("trousers", "trousers", "shorts")
    cut = bottoms[int(rng.integers(len(bottoms)))]
    bottom = _sample_garment(rng, "bottom", cut, top.colour, 0.25)
    if rng.random() < 0.65:
        shirts = "Blouses_Shirts" if gender == "WOMEN" else "Shirts_Polos"
        category = "Tees_Tanks" if top.cut == "short-sleeved" else shirts
    else:
        category = {"trousers": "Pants", "shorts": "Shorts", "skirt": "Skirts"}[cut]
    return category, (top, bottom)


def sample_identity(rng: np.random.Generator, number: int = 1) -> Identity:
    """Draw one FashionSynth identity (gender, outfit, skin, hair, body proportions, background) from rng."""
    gender = "WOMEN" if rng.random() < 0.55 else "MEN"
    category, garments = _sample_outfit(rng, gender)
    hair_style = ("long", "long", "bun", "short")[int(rng.integers(4))] if gender == "WOMEN" else "short"
    tint = rng.uniform(-10, 10, size=3)
    background = np.clip(rng.uniform(212, 240) + tint, 0, 255).round().astype(int)
    women = gender == "WOMEN"
    return Identity(
        number=number,
        gender=gender,
        category=category,
        garments=garments,
        skin_rgb=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        hair_rgb=HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))],
        hair_style=hair_style,
        shoe_rgb=SHOE_COLOURS[int(rng.integers(len(SHOE_COLOURS)))],
        background_rgb=tuple(int(v) for v in background),
        shoulder_half=float(rng.uniform(19.0, 22.0) if women else rng.uniform(22.0, 25.5)),
        hip_half=float(rng.uniform(14.0, 16.5) if women else rng.uniform(12.5, 14.5)),
        build=float(rng.uniform(0.9, 1.05) if women else rng.uniform(1.0, 1.15)),
    )


def _describe(garment: Garment, article: bool) -> str:
    """`a blue dotted top`, `black trousers`, `an orange striped skirt`."""
    words = " ".join(w for w in (garment.colour, PATTERN_WORDS[garment.pattern], garment.noun) if w)
    if not article or garment.cut in ("trousers", "shorts"):
        return words
    return ("an " if words[0] in "aeiou" else "a ") + words


def caption(identity: Identity) -> str:
    """Attribute caption: "a woman wearing a red striped dress", "a man wearing a blue dotted top and black trousers"."""
    person = "a woman" if identity.gender == "WOMEN" else "a man"
    return f"{person} wearing " + " and ".join(_describe(g, article=True) for g in identity.garments)
