"""The capped reads: a file or stream, and a body arriving in chunks, read up to their cap and no further."""

import asyncio
import io

import pytest

from lookalike_cli.files import READ_SIZE, OverLimit, read_capped
from lookalike_cli.serving.streams import read_capped_async


def test_a_stream_is_read_to_its_end_within_the_cap_and_no_further_past_it():
    assert read_capped(io.BytesIO(b"x" * 300_000), 300_000) == b"x" * 300_000
    stream = io.BytesIO(b"x" * 1_000_000)
    with pytest.raises(OverLimit, match="over the limit of 200000 bytes"):
        read_capped(stream, 200_000)
    assert stream.tell() <= 200_000 + READ_SIZE


def test_chunks_are_joined_within_the_cap_and_no_further_are_read_past_it():
    sent = []

    async def chunks():
        for number in range(10):
            sent.append(number)
            yield b"x" * 100

    assert asyncio.run(read_capped_async(chunks(), 1000)) == b"x" * 1000
    sent.clear()
    with pytest.raises(OverLimit, match="over the limit of 250 bytes"):
        asyncio.run(read_capped_async(chunks(), 250))
    assert sent == [0, 1, 2]
