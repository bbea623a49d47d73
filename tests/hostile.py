"""Hostile inputs, built here from their recipe (never stored as blobs): for the tests and benchmarks/bench_serve.py."""

from __future__ import annotations

import numpy as np
from PIL import Image

from conftest import DEMO, encoded

# The decode timeout of the tests that stop slow_jpeg: 11-18 times less than it takes here (0.55-0.9 s, at 1/8 scale
# or whole), 17-50 times more than an ordinary photo's decode (1-3 ms, in a fresh process too)
DECODE_TIMEOUT = 0.05
DECODE_TIMED_OUT = f"not decoded within {DECODE_TIMEOUT} s"  # what the image's rejection says then


def repeated_scans_jpeg(side: int, repeats: int) -> bytes:
    """A flat grey progressive JPEG of ``side`` x ``side`` pixels whose last scan (a refinement of every block,
    a few dozen bytes) is repeated ``repeats`` times: libjpeg warns and decodes every copy, a pass over the whole
    image each (tens of ms at 6000 px), so that a few hundred kB cost minutes."""
    data = encoded(Image.new("RGB", (side, side), (120, 130, 140)), "JPEG", quality=90, progressive=True)
    end = data.rindex(b"\xff\xd9")
    last_scan = data[data.rindex(b"\xff\xda"):end]  # 0xFF 0xDA occurs only as a marker (data bytes are stuffed)
    return data[:end] + last_scan * repeats + data[end:]


def tiny_jpeg() -> bytes:
    return encoded(Image.new("RGB", (1, 1), (120, 130, 140)), "JPEG")


def comment_bomb_jpeg(segments: int) -> bytes:
    """A 1x1 JPEG with ``segments`` empty comment segments between its frame header and its scan (4 bytes each):
    Pillow walks every one of them in Python before it decodes a pixel."""
    data = tiny_jpeg()
    scan = data.index(b"\xff\xda")
    return data[:scan] + b"\xff\xfe\x00\x02" * segments + data[scan:]


def fill_bomb_jpeg(fill: int) -> bytes:
    """A 1x1 JPEG with ``fill`` 0xFF fill bytes before its scan's marker (as many as a marker may have before it)."""
    data = tiny_jpeg()
    scan = data.index(b"\xff\xda")
    return data[:scan] + b"\xff" * fill + data[scan:]


def rle8_bmp(width: int, height: int) -> bytes:
    """A BMP of ``width`` x ``height`` grey pixels, run-length encoded (RLE8: a row is a few runs of 255 pixels),
    the compression Pillow expands in Python (a few tens of kB of short runs took it 12-30 s)."""
    runs = b"\xff\x00" * (width // 255) + (bytes([width % 255, 0]) if width % 255 else b"")
    pixels = (runs + b"\x00\x00") * height + b"\x00\x01"  # each row ends with 0 0; the bitmap with 0 1
    palette = bytes(value for level in range(256) for value in (level, level, level, 0))
    offset = 14 + 40 + len(palette)
    info = (40).to_bytes(4, "little") + width.to_bytes(4, "little") + height.to_bytes(4, "little") + \
        (1).to_bytes(2, "little") + (8).to_bytes(2, "little") + (1).to_bytes(4, "little") + \
        len(pixels).to_bytes(4, "little") + bytes(8) + (256).to_bytes(4, "little") + bytes(4)
    return b"BM" + (offset + len(pixels)).to_bytes(4, "little") + bytes(4) + offset.to_bytes(4, "little") + \
        info + palette + pixels


def flat_webp(width: int, height: int) -> bytes:
    """A flat lossless WebP: a kB or so whatever its size, which libwebp decodes into a frame of its own."""
    return encoded(Image.new("RGB", (width, height), (10, 20, 30)), "WEBP", lossless=True)


def slow_jpeg() -> bytes:
    """The slowest JPEG the image bounds let through: 27 scans over 36 Mpx (0.55-0.9 s of decoding here)."""
    return repeated_scans_jpeg(6000, 17)


def sixteen_bit_png(width: int, height: int) -> bytes:
    """A 16-bit grey PNG: a few hundred kB that Pillow holds as 2 bytes a pixel (a gradient, so it compresses)."""
    values = (np.arange(width, dtype=np.uint32)[None, :] * 65535 // max(1, width - 1)).astype(np.uint16)
    return encoded(Image.fromarray(np.repeat(values, height, axis=0)), "PNG")


def rgba_png(width: int, height: int) -> bytes:
    """A flat half-transparent RGBA PNG: a few kB that Pillow holds as 4 bytes a pixel."""
    return encoded(Image.new("RGBA", (width, height), (200, 100, 50, 128)), "PNG")


def eps() -> bytes:
    """An Encapsulated PostScript file (what Pillow hands to Ghostscript, where it is installed)."""
    return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n%%EndComments\n"
            b"newpath 10 10 moveto 90 90 lineto stroke\nshowpage\n%%EOF\n")


def collage(faces: int) -> bytes:
    """A JPEG of ``faces`` demo portraits side by side (rows of 8): one face each."""
    portraits = sorted((DEMO / "images").glob("*.jpg"))
    tiles = [Image.open(portraits[i % len(portraits)]).convert("RGB") for i in range(faces)]
    width, height = tiles[0].size
    columns = min(8, faces)
    sheet = Image.new("RGB", (columns * width, -(-faces // columns) * height), (255, 255, 255))
    for number, tile in enumerate(tiles):
        sheet.paste(tile.resize((width, height)), ((number % columns) * width, (number // columns) * height))
    return encoded(sheet, "JPEG", quality=90)
