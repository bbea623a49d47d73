"""The one exception users see, and the failure of one item that a run records and goes on from."""


class LookalikeError(Exception):
    """A problem with the user's input, data or environment, explained in one line."""


class Failure(Exception):
    """One item (an image, a task) that could not be done: a short machine-readable reason and a human detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # rebuilt from (reason, detail) when it crosses to another process
        return type(self), (self.reason, self.detail)
