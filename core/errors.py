"""The one exception type for problems a user can fix."""

from __future__ import annotations


class InputError(Exception):
    """A problem the user can fix; the message says what to do, on one line.

    `ui` is the same message in the app's words (a checkbox to tick instead of a flag to pass),
    for the few errors whose remedy differs between the command line and a page.
    """

    def __init__(self, message: str, ui: str | None = None) -> None:
        super().__init__(message)
        self.ui = ui

    @property
    def ui_message(self) -> str:
        return self.ui or str(self)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message as one line for a status row or an `error:` line (its type when it
    has no message): libraries' messages often go on for pages."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
