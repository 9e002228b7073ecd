"""The training loss curve as a PNG, drawn with PIL (no plotting library: importing matplotlib cost ~1.5 s a run)."""

from __future__ import annotations

import math
from pathlib import Path


def plot_losses(rows: list[dict], path: Path, title: str = "training loss") -> None:
    """Loss curve (raw and smoothed) as a 500x300 PNG."""
    from PIL import Image, ImageDraw

    from atelier.utils.io import save_image

    points = [(row["step"], row["loss"]) for row in rows if math.isfinite(row["loss"])]
    if not points:
        return
    smooth, value = [], points[0][1]
    for step, loss in points:
        value = 0.9 * value + 0.1 * loss
        smooth.append((step, value))
    (left, top), (right, bottom) = (62, 28), (485, 262)  # the plot area inside a 500x300 image
    x_low, x_high = points[0][0], max(points[-1][0], points[0][0] + 1)
    y_low, y_high = min(loss for _, loss in points), max(loss for _, loss in points)
    pad = (y_high - y_low) * 0.05 or abs(y_high) * 0.05 or 1.0
    y_low, y_high = y_low - pad, y_high + pad

    def at(step: float, loss: float) -> tuple[float, float]:
        return (left + (step - x_low) / (x_high - x_low) * (right - left),
                bottom - (loss - y_low) / (y_high - y_low) * (bottom - top))

    image = Image.new("RGB", (500, 300), "white")
    draw = ImageDraw.Draw(image)
    for tick in range(5):
        loss, step = y_low + (y_high - y_low) * tick / 4, x_low + (x_high - x_low) * tick / 4
        y, x = at(x_low, loss)[1], at(step, y_low)[0]
        draw.line([(left, y), (right, y)], fill=(235, 235, 235))
        draw.text((left - 6, y), f"{loss:.3g}", fill="black", anchor="rm")
        draw.text((x, bottom + 6), f"{step:.0f}", fill="black", anchor="mt")
    draw.rectangle([left, top, right, bottom], outline="black")
    for curve, colour, width in ((points, (158, 202, 225), 1), (smooth, (230, 85, 13), 2)):
        draw.line([at(*point) for point in curve] if len(curve) > 1 else [at(*curve[0])] * 2, fill=colour, width=width)
    draw.text(((left + right) / 2, 8), title, fill="black", anchor="mt")
    draw.text(((left + right) / 2, 292), "step", fill="black", anchor="mb")
    draw.text((4, 8), "loss", fill="black", anchor="lt")
    for row, (label, colour) in enumerate((("loss", (158, 202, 225)), ("smoothed", (230, 85, 13)))):
        y = top + 10 + 14 * row
        draw.line([(right - 90, y), (right - 70, y)], fill=colour, width=2)
        draw.text((right - 64, y), label, fill="black", anchor="lm")
    save_image(image, path)
