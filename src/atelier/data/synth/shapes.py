"""A painter's canvas of part ids: tapered capsules, rotated ellipses and polygons rasterised with numpy and PIL.

Each body or garment piece is one part id; later pieces paint over earlier ones (painter's order), so the final part
map is what the camera sees. Colours, parse labels and outlines are all looked up from it afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw


@dataclass
class Part:
    """One paintable piece: a name, its parse label and the garment it belongs to (None for body parts)."""

    name: str
    label: int
    rgb: tuple[int, int, int]
    garment: int | None = None  # index into identity.garments


@dataclass
class Canvas:
    """Part-id map (H, W) uint8 plus the table of parts; id 0 is the background."""

    height: int
    width: int
    parts: list[Part] = field(default_factory=list)
    ids: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.ids = np.zeros((self.height, self.width), dtype=np.uint8)
        self.parts = [Part("background", 0, (0, 0, 0))]

    def add_part(self, part: Part) -> int:
        """Register a part and return its id."""
        self.parts.append(part)
        return len(self.parts) - 1

    def _box(self, y_min: float, y_max: float, x_min: float, x_max: float) -> tuple[int, int, int, int] | None:
        """Clip a float bounding box to the canvas; None when it falls outside."""
        top, bottom = max(int(np.floor(y_min)), 0), min(int(np.ceil(y_max)) + 1, self.height)
        left, right = max(int(np.floor(x_min)), 0), min(int(np.ceil(x_max)) + 1, self.width)
        return (top, bottom, left, right) if top < bottom and left < right else None

    def capsule(self, part_id: int, p0, p1, r0: float, r1: float | None = None) -> None:
        """Paint a tapered capsule from p0 (radius r0) to p1 (radius r1): a limb, a sleeve, a trouser leg."""
        p0, p1 = np.asarray(p0, dtype=np.float32), np.asarray(p1, dtype=np.float32)
        r1 = r0 if r1 is None else r1
        reach = max(r0, r1)
        box = self._box(min(p0[0], p1[0]) - reach, max(p0[0], p1[0]) + reach, min(p0[1], p1[1]) - reach, max(p0[1], p1[1]) + reach)
        if box is None:
            return
        top, bottom, left, right = box
        ys = np.arange(top, bottom, dtype=np.float32)[:, None] - p0[0]
        xs = np.arange(left, right, dtype=np.float32)[None, :] - p0[1]
        direction = p1 - p0
        length2 = float(direction @ direction)
        t = np.clip((ys * direction[0] + xs * direction[1]) / length2, 0.0, 1.0) if length2 > 0 else np.zeros((1, 1), np.float32)
        distance2 = (ys - t * direction[0]) ** 2 + (xs - t * direction[1]) ** 2
        radius = r0 + t * (r1 - r0)
        self.ids[top:bottom, left:right][distance2 <= radius * radius] = part_id

    def disk(self, part_id: int, center, radius: float) -> None:
        """Paint a disk."""
        self.capsule(part_id, center, center, radius)

    def ellipse(self, part_id: int, center, radius_along: float, radius_across: float, axis) -> None:
        """Paint an ellipse whose first radius runs along the unit vector `axis` (y, x)."""
        center, axis = np.asarray(center, dtype=np.float32), np.asarray(axis, dtype=np.float32)
        reach = max(radius_along, radius_across)
        box = self._box(center[0] - reach, center[0] + reach, center[1] - reach, center[1] + reach)
        if box is None:
            return
        top, bottom, left, right = box
        ys = np.arange(top, bottom, dtype=np.float32)[:, None] - center[0]
        xs = np.arange(left, right, dtype=np.float32)[None, :] - center[1]
        along = ys * axis[0] + xs * axis[1]
        across = -ys * axis[1] + xs * axis[0]
        inside = (along / radius_along) ** 2 + (across / radius_across) ** 2 <= 1.0
        self.ids[top:bottom, left:right][inside] = part_id

    def polygon(self, part_id: int, points) -> None:
        """Paint a filled polygon given as (y, x) vertices."""
        points = np.asarray(points, dtype=np.float64)
        box = self._box(points[:, 0].min(), points[:, 0].max(), points[:, 1].min(), points[:, 1].max())
        if box is None:
            return
        top, bottom, left, right = box
        mask = Image.new("L", (right - left, bottom - top), 0)
        ImageDraw.Draw(mask).polygon([(float(x - left), float(y - top)) for y, x in points], fill=1)
        self.ids[top:bottom, left:right][np.asarray(mask, dtype=bool)] = part_id

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Map the part-id image through a per-part table (labels, colours, ...)."""
        return np.asarray(values)[self.ids]
