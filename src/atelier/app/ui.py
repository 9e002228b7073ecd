"""The app itself: one tab per built task (TAB_MODULES), the theme (system fonts: nothing is fetched from the
internet) and launch. A task that is not built has no tab."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from atelier.app.jobs import AppContext
from atelier.app.tabs import caption, design, evaluate, illustrate, pose, search, translate, tryon

TAB_MODULES = [translate, illustrate, pose, tryon, design, search, caption, evaluate]
INTRO = ("**atelier**: diffusion-based fashion image synthesis. Each tab runs the same command as the CLI "
         "(`atelier {commands}`) and offers its outputs and settings.json for download.")
# outputs fill their box (a 64x96 demo image is unreadable at its own size; pixelated rather than blurred when
# enlarged), the metrics table keeps names and values on one line
COMMANDS = {"pose": "pose-transfer", "tryon": "try-on"}  # a tab module's name -> its command, where they differ
CSS = """
.atelier-missing {color: #a15c00}
.atelier-output img {width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated}
#evaluate-table td:nth-child(-n+2), #evaluate-table th:nth-child(-n+2) {white-space: nowrap}
"""


def build_app(ctx: AppContext) -> gr.Blocks:
    """The Blocks of every tab over `ctx`."""
    commands = ", ".join(COMMANDS.get(name, name) for name in (module.__name__.rsplit(".", 1)[-1] for module in TAB_MODULES))
    with gr.Blocks(title="atelier") as app:
        gr.Markdown(INTRO.format(commands=commands))
        with gr.Tabs():
            for module in TAB_MODULES:
                with gr.Tab(module.TITLE, id=module.__name__.rsplit(".", 1)[-1]):
                    module.build(ctx)
    return app


def theme() -> gr.themes.Base:
    """gradio's default look with system fonts (the default theme loads its fonts from Google)."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def served_folders(ctx: AppContext) -> list[str]:
    """The folders the page may show files from: the request folders and the runs' data (the examples)."""
    folders = [ctx.workspace.root, *ctx.roots]
    for checkpoint in ctx.checkpoints:
        data = checkpoint.config.get("data") or {}
        folders += [Path(str(data[key])).parent for key in ("root", "real_root") if data.get(key)]
    return sorted({str(Path(folder).expanduser().resolve()) for folder in folders})


def launch(ctx: AppContext, host: str, port: int, share: bool = False, block: bool = True) -> gr.Blocks:
    """Serve the app on host:port (never shared unless asked); uploads over the limit are refused by gradio itself."""
    app = build_app(ctx)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, share=share, max_file_size=ctx.limits.max_bytes,
               allowed_paths=served_folders(ctx), theme=theme(), css=CSS, ssr_mode=False, show_error=True,
               prevent_thread_lock=not block, quiet=False)
    return app
