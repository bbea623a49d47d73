"""Fair shares of the recognizer: at most ``serve.max_client_photos`` photos of one client (an address, a chat) in
work at once, received, waiting or being answered, so that no one client takes every place."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Hashable, Iterator


class TooMany(Exception):
    """The client already has as many photos in work as it may."""


class PhotosPerClient:
    """Photos in work per client, at most ``limit`` each (used from one event loop: no lock)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held: Counter[Hashable] = Counter()

    @contextlib.contextmanager
    def holding(self, client: Hashable) -> Iterator[None]:
        """One photo of ``client`` in work for the block; TooMany when it has ``limit`` already."""
        if self.held[client] >= self.limit:
            raise TooMany()
        self.held[client] += 1
        try:
            yield
        finally:
            self.held[client] -= 1
            if not self.held[client]:
                del self.held[client]
