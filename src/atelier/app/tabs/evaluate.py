"""Evaluate tab: two uploaded sets of images (files or zips) and a protocol -> the metrics table (`atelier evaluate`)."""

from __future__ import annotations

import json
from typing import Any

from atelier.app.jobs import AppContext, Result, flag, run_command, switch
from atelier.app.uploads import image_folder, text_upload

TITLE = "Evaluate"
TASK = "evaluate"


def evaluate(ctx: AppContext, generated: Any, ground_truth: Any, real: Any, protocol: str, pairs: Any, setting: str,
             allow_random_weights: bool) -> tuple[str, Result]:
    """Run `atelier evaluate` on the uploads; returns the markdown table and the report."""
    from atelier.metrics.report import markdown_table

    request = ctx.workspace.new_request("evaluate")
    inputs = request / "inputs"
    generated_dir = image_folder(generated, "generated images", inputs / "generated", ctx.limits)
    truth_dir = image_folder(ground_truth, "ground-truth images", inputs / "ground_truth", ctx.limits)
    real_dir = image_folder(real, "real set", inputs / "real", ctx.limits) if real else None
    pairs_csv = text_upload(pairs, "pairs CSV", inputs, ctx.limits, (".csv",), "a pairs CSV with the header from,to")
    report_path = request / "report.json"
    run_command(["evaluate", f"--protocol={protocol}", f"--generated={generated_dir}", f"--ground-truth={truth_dir}",
                 f"--out={report_path}", *flag("real", real_dir), *flag("pairs", pairs_csv),
                 *flag("setting", setting if protocol == "vitonhd" else None), *switch("allow-random-weights", allow_random_weights)])
    report = json.loads(report_path.read_text(encoding="utf-8"))
    return markdown_table(report), Result(None, [report_path], report)


def build(ctx: AppContext) -> None:
    import gradio as gr

    from atelier.app.tabs.common import guarded
    from atelier.commands.evaluate import IMAGE_PROTOCOLS

    with gr.Row():
        with gr.Column():
            generated = gr.File(label="generated images (files or a .zip)", file_count="multiple",
                                file_types=["image", ".zip"], elem_id="evaluate-generated")
            truth = gr.File(label="ground-truth images (files or a .zip; matched by name)", file_count="multiple",
                            file_types=["image", ".zip"], elem_id="evaluate-truth")
            protocol = gr.Dropdown(list(IMAGE_PROTOCOLS), value="standard", label="protocol",
                                   info="cfld / pidm: pose transfer as the papers; standard: SSIM, PSNR, LPIPS, FID, KID; "
                                        "vitonhd: try-on")
            with gr.Accordion("more settings", open=False):
                real = gr.File(label="real set for FID/KID (cfld/pidm: the training images; default: the ground truth)",
                               file_count="multiple", file_types=["image", ".zip"])
                pairs = gr.File(label="pairs CSV (from,to): names the source in each output", file_types=[".csv"])
                setting = gr.Radio(["paired", "unpaired"], value="paired", label="vitonhd setting")
                random_weights = gr.Checkbox(label="seeded random networks where weights are missing (NOT COMPARABLE)")
            button = gr.Button("Evaluate", variant="primary", elem_id="evaluate-run")
        with gr.Column():
            table = gr.Markdown(elem_id="evaluate-table")
            files = gr.File(label="downloads", file_count="multiple", interactive=False)
            report = gr.JSON(label="report.json", open=False)

    def handler(*values):
        text, result = evaluate(ctx, *values)
        return text, [str(path) for path in result.files], result.settings

    button.click(guarded(handler), [generated, truth, real, protocol, pairs, setting, random_weights],
                 [table, files, report], preprocess=False)
