"""Design tab: a garment drawn on a person from a sketch and a prompt (`atelier design`, MGD's task on the try-on
network). The person's four images, their preview and the run are the Try-on tab's (tryon.py)."""

from __future__ import annotations

from typing import Any

from atelier.app.jobs import AppContext, Result
from atelier.app.tabs.tryon import DESIGN, build_tab, draw

TITLE = DESIGN.title
TASK = DESIGN.task


def design(ctx: AppContext, person: Any, agnostic: Any, mask: Any, densepose: Any, sketch: Any, prompt: str,
           checkpoint: str, steps: int, guidance_scale: float, scheduler: str, seed: int) -> Result:
    """Run `atelier design`: the garment of the uploaded sketch and the prompt, drawn on the uploaded person."""
    values = {"person": person, "agnostic": agnostic, "mask": mask, "densepose": densepose}
    return draw(ctx, DESIGN, values, sketch, prompt, checkpoint, steps, guidance_scale, scheduler, seed)


def build(ctx: AppContext) -> None:
    from atelier.app.tabs.common import bind_run

    images, settings, button, outputs = build_tab(ctx, DESIGN, "Design", "the person wearing the designed garment")
    bind_run(button, lambda *values: design(ctx, *values), [*images, *settings], outputs)
