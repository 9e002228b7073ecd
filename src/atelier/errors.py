"""The one error type for bad user input: the CLI prints its message on one line and exits with code 2."""


class UserError(ValueError):
    """Bad input from the user (a file, field, key or flag). The message names it, says what was expected and how to fix it."""
