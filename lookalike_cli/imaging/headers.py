"""What an image's first bytes say before anything is decoded: its pixels, a JPEG's markers and scans."""

from __future__ import annotations

import itertools
import re
from typing import Iterator

# In a JPEG's entropy-coded data a 0xFF byte is followed by 0x00 (a stuffed byte) or a restart marker; any other
# byte after it starts the next marker.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}  # markers without a length: TEM, RST0-7


def jpeg_markers(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, offset) of each marker of a JPEG's first image in order, found by walking the segments' lengths
    and skipping each scan's entropy-coded data, decoding nothing; a fill byte shows as marker 0xFF."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        yield marker, at
        if marker == 0xFF:
            at += 1
        elif marker in _STANDALONE_MARKERS:
            at += 2
        elif marker == 0xD9:  # end of image
            return
        else:
            at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
            if marker == 0xDA:  # start of scan: its entropy-coded data runs to the next marker
                following = _NEXT_MARKER.search(data, at)
                if following is None:
                    return
                at = following.start()


def jpeg_scans(data: bytes) -> int:
    """The scans (SOS segments) of a JPEG's first image."""
    return sum(marker == 0xDA for marker, _ in jpeg_markers(data))


_SOF_MARKERS = {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)}
HEADER_MARKERS = 64  # JPEG markers read at most before the frame header; more and the size counts as unknown


def header_pixels(data: bytes) -> int | None:
    """Width times height as the header of a JPEG, PNG, GIF, BMP or WebP declares it, read from a few fixed
    bytes (for a JPEG, at most HEADER_MARKERS markers, none after its first scan) in pure Python: cheap and safe
    enough for a server's event loop, where no decoder should run. None when the bytes are not one of these or
    the header cannot be read."""
    def number(start: int, size: int, order: str = "little") -> int:
        return int.from_bytes(data[start:start + size], order)

    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return number(16, 4, "big") * number(20, 4, "big")
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return number(6, 2) * number(8, 2)
    if data[:2] == b"BM" and len(data) >= 26:
        if number(14, 4) == 12:  # the OS/2 header of 16-bit sizes
            return number(18, 2) * number(20, 2)
        return abs(int.from_bytes(data[18:22], "little", signed=True) *
                   int.from_bytes(data[22:26], "little", signed=True))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8 ":
            return (number(26, 2) & 0x3FFF) * (number(28, 2) & 0x3FFF)
        if chunk == b"VP8L":
            bits = number(21, 4)
            return ((bits & 0x3FFF) + 1) * (((bits >> 14) & 0x3FFF) + 1)
        if chunk == b"VP8X":
            return (number(24, 3) + 1) * (number(27, 3) + 1)
        return None
    if data[:2] == b"\xff\xd8":
        for marker, at in itertools.islice(jpeg_markers(data), HEADER_MARKERS):
            if marker == 0xDA:  # a scan before any frame header: not a JPEG to guess about
                return None
            if marker in _SOF_MARKERS:
                return number(at + 5, 2, "big") * number(at + 7, 2, "big") if at + 9 <= len(data) else None
    return None
