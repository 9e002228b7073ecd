"""One module per tab: TITLE, TASK (the CLI command it runs) and build(ctx), plus the handler the tests call."""
