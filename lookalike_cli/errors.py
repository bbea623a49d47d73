"""The one exception users see: its message is printed as a single line, without a traceback."""


class LookalikeError(Exception):
    """A problem with the user's input, data or environment, explained in one line."""
