"""The two error types the CLI turns into one line: bad user input (exit 2) and a broken set of installed packages
(exit 1). Everything else is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user (a file, field, key or flag). The message names it, says what was expected and how to fix it."""


class DependencyError(RuntimeError):
    """Installed packages that do not work together. The message names the packages, their versions and the fix."""


def raise_if_version_clash(error: BaseException) -> None:
    """Re-raise a library's version-gate error as a DependencyError naming the clashing packages; else do nothing.
    Called where a library error is caught, before it is considered the user's mistake."""
    from atelier.environment import version_clash

    message = version_clash(error)
    if message:
        raise DependencyError(message) from error
