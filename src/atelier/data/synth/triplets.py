"""FashionIQ-style triplets over FashionSynth products: a candidate, a target of the same category that differs in one
or two known attributes, and two relative captions generated from the difference.

Attributes compared: `colour` (the base colour), `pattern` (`plain` or pattern with its colour, e.g. `white stripes`)
and, for dresses, `cut` (`sleeveless` or `short-sleeved`; tops keep their cut, it decides shirt vs toptee). One
change: the two captions are two phrasings of it ("is red instead of blue", "is red in colour"). Two changes: the
first caption states the first, the second caption the second, as FashionIQ's annotators split a change.
"""

from __future__ import annotations

import numpy as np

from atelier.data.synth.products import Product

ATTRIBUTES = ("colour", "pattern", "cut")
TARGETS_PER_CANDIDATE = 2  # FashionIQ uses an image in several triplets
PATTERN_ADJECTIVES = {"stripes": "striped", "dots": "dotted", "checks": "checked"}


def attribute_values(product: Product) -> dict[str, str]:
    """The compared attributes of a product: colour, pattern phrase and cut."""
    return {"colour": product.garment.colour, "pattern": product.pattern_phrase, "cut": product.garment.cut}


def changed_attributes(candidate: Product, target: Product) -> list[str]:
    """The attributes (in ATTRIBUTES order) whose values differ between candidate and target."""
    old, new = attribute_values(candidate), attribute_values(target)
    return [name for name in ATTRIBUTES if old[name] != new[name]]


def _phrasings(attribute: str, old: Product, new: Product) -> tuple[str, str]:
    """Two relative captions saying how `new` differs from `old` in one attribute."""
    if attribute == "colour":
        return f"is {new.garment.colour} instead of {old.garment.colour}", f"is {new.garment.colour} in colour"
    if attribute == "cut":
        if new.garment.cut == "sleeveless":
            return "is sleeveless", "has no sleeves instead of short ones"
        return "has short sleeves", "is short-sleeved instead of sleeveless"
    if new.garment.pattern == "solid":
        return "is plain", f"has no pattern instead of {old.pattern_phrase}"
    adjective = PATTERN_ADJECTIVES[new.garment.pattern]
    if old.garment.pattern == "solid":
        return f"has {new.pattern_phrase}", f"is {adjective} instead of plain"
    return f"has {new.pattern_phrase}", f"has {new.pattern_phrase} instead of {old.pattern_phrase}"


def relative_captions(candidate: Product, target: Product) -> tuple[str, str]:
    """Two captions describing the target relative to the candidate; they must differ in one or two attributes."""
    changed = changed_attributes(candidate, target)
    if not 1 <= len(changed) <= 2:
        raise ValueError(f"{candidate.asin} -> {target.asin}: {len(changed)} attributes differ; expected 1 or 2")
    if len(changed) == 1:
        return _phrasings(changed[0], candidate, target)
    return _phrasings(changed[0], candidate, target)[0], _phrasings(changed[1], candidate, target)[0]


def make_triplets(gallery: list[Product], rng: np.random.Generator) -> list[dict]:
    """Up to TARGETS_PER_CANDIDATE triplets per gallery product, the targets drawn (without repeats) from the products
    that differ from it in one or two attributes. Returns dicts with candidate, target (ASINs), captions and the
    changed attributes."""
    triplets = []
    for candidate in gallery:
        partners = [p for p in gallery if 1 <= len(changed_attributes(candidate, p)) <= 2]
        chosen = rng.permutation(len(partners))[:TARGETS_PER_CANDIDATE]
        for target in (partners[int(i)] for i in chosen):
            triplets.append({
                "candidate": candidate.asin, "target": target.asin,
                "captions": list(relative_captions(candidate, target)), "changed": changed_attributes(candidate, target),
            })  # fmt: skip
    return triplets
