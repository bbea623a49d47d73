"""What an image's first bytes say before anything is decoded: its pixels, a JPEG's markers and scans."""

from __future__ import annotations

import itertools
import re
from typing import Iterator

# In a JPEG's entropy-coded data a 0xFF byte is followed by 0x00 (a stuffed byte) or a restart marker; any other
# byte after it starts the next marker.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_FILL = re.compile(rb"\xff+")  # fill bytes: any number of 0xFF may stand before a marker's 0xFF
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}  # markers without a length: TEM, RST0-7
# A camera's or an encoder's JPEG holds a few dozen marker segments and no fill; Pillow walks them in Python, so a
# JPEG of millions of empty segments, or of megabytes of fill, took tens of seconds before a pixel was decoded.
MAX_JPEG_SEGMENTS = 1000
MAX_JPEG_FILL = 4096  # fill bytes in all


class JpegTooComplex(ValueError):
    """A JPEG whose markers pass a bound (the message says which), found before anything walks them all."""


def jpeg_markers(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, offset, fill bytes before it) of each marker of a JPEG's first image in order, found by walking
    the segments' lengths and skipping each scan's entropy-coded data and each run of fill bytes whole, decoding
    nothing."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        start = at
        at = _FILL.match(data, at).end() - 1  # the last 0xFF of a run is the marker's
        if at + 4 > len(data):
            return
        marker = data[at + 1]
        yield marker, at, at - start
        if marker in _STANDALONE_MARKERS:
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


def jpeg_scans(data: bytes, max_scans: int) -> int:
    """The scans (SOS segments) of a JPEG's first image, from one walk of its markers that stops at the first
    bound passed: JpegTooComplex past ``max_scans`` scans, MAX_JPEG_SEGMENTS segments or MAX_JPEG_FILL fill
    bytes."""
    scans = fill = 0
    for segments, (marker, _, skipped) in enumerate(jpeg_markers(data), 1):
        scans += marker == 0xDA
        fill += skipped
        if scans > max_scans:
            raise JpegTooComplex(f"a JPEG of more than {max_scans} scans is over the limit")
        if segments > MAX_JPEG_SEGMENTS:
            raise JpegTooComplex(f"a JPEG of more than {MAX_JPEG_SEGMENTS} marker segments is over the limit")
        if fill > MAX_JPEG_FILL:
            raise JpegTooComplex(f"a JPEG of more than {MAX_JPEG_FILL} fill bytes is over the limit")
    return scans


_SOF_MARKERS = {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)}
HEADER_MARKERS = 64  # JPEG markers read at most before the frame header; more and the size counts as unknown


RLE_BMP = (1, 2)  # a BMP's compression field: RLE8, RLE4 (Pillow decodes them in Python)


def bmp_compression(data: bytes) -> int | None:
    """The compression field of a BMP's info header (0: none), None for the OS/2 header, which has none."""
    if len(data) < 34 or int.from_bytes(data[14:18], "little") == 12:
        return None
    return int.from_bytes(data[30:34], "little")


def header_pixels(data: bytes) -> int | None:
    """Width times height as the header of a JPEG, PNG, GIF, BMP or WebP declares it, read from a few fixed
    bytes (for a JPEG, at most HEADER_MARKERS markers and MAX_JPEG_FILL fill bytes, none after its first scan) in
    pure Python: cheap and safe enough for a server's event loop, where no decoder should run. None when the bytes
    are not one of these or the header cannot be read."""
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
        fill = 0
        for marker, at, skipped in itertools.islice(jpeg_markers(data), HEADER_MARKERS):
            fill += skipped
            if marker == 0xDA or fill > MAX_JPEG_FILL:  # a scan before any frame header, or padding: no guessing
                return None
            if marker in _SOF_MARKERS:
                return number(at + 5, 2, "big") * number(at + 7, 2, "big") if at + 9 <= len(data) else None
    return None
