"""The one exception type for problems a user can fix."""


class InputError(Exception):
    """A problem the user can fix; the message says what to do, on one line."""
