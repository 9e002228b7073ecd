"""`atelier app`: one gradio web app with a tab per built task, over the same commands as the CLI.

Each tab checks its uploads (`uploads`), copies them into a fresh request folder, builds the command line the CLI
would take and runs it in this process (`jobs`), so an output, its grid and its settings.json are what
`atelier COMMAND` writes; models stay loaded between requests (`atelier.utils.kept`). The default models are the ones
`atelier demo` trains (`checkpoints` finds every training run under the given folders).

Layout: `checkpoints` (finding runs), `uploads` (checking what a browser sends), `jobs` (request folders, running a
command), `tabs/` (one module per task: its widgets and its handler, a plain function the tests call directly),
`ui` (the Blocks of every tab, the theme and launch). gradio is imported only in `tabs/` and `ui`.
"""
