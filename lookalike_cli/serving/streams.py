"""Bodies that arrive in chunks (a request's, a download's), read with a cap on their size."""

from __future__ import annotations

from typing import AsyncIterable

from ..files import OverLimit


async def read_capped_async(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """The chunks joined, read as they arrive; OverLimit (``files.read_capped``'s) as soon as they pass ``limit``
    bytes (read no further)."""
    body, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise OverLimit(limit)
        body.append(chunk)
    return b"".join(body)
