"""The slowest image of each accepted format that the image bounds let through, decoded side by side in one run:
the figures behind docs/use.md's "the slowest image the bounds let through" (issue 24).

    .venv/bin/python benchmarks/bench_slowest.py

For each format, the largest image the default `[image]` bounds accept (pixels, decoded bytes, JPEG scans),
made here with content that is costly to decode (noise, which compresses least), is decoded by `decode_image` in a
process of its own, 3 times; the median is reported with the file's size.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

from common import REPO, header, markdown_table, median, write_report

sys.path.insert(0, str(REPO / "tests"))
import hostile  # noqa: E402  (the hostile inputs, built from their recipes)

from lookalike_cli.config import ImageConfig  # noqa: E402
from lookalike_cli.imaging.decode import ImageRejected, decode_image  # noqa: E402

TIMED = """
import sys, time
from pathlib import Path
from lookalike_cli.config import ImageConfig
from lookalike_cli.imaging.decode import decode_image
data = Path(sys.argv[1]).read_bytes()
started = time.perf_counter()
decode_image(data, ImageConfig())
print(time.perf_counter() - started)
"""


def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "L": 1, "P": 1}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    return image.convert("P") if mode == "P" else image


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def largest_accepted(make, sides: list[int]) -> tuple[int, bytes]:
    """The largest side (of a square) whose image ``make(side)`` the bounds accept, file size included, and its
    bytes."""
    best = None
    for side in sides:
        data = make(side)
        try:
            decode_image(data, ImageConfig())
        except ImageRejected:
            break
        if len(data) > ImageConfig().max_file_bytes:
            break
        best = (side, data)
    return best


def timed(data: bytes, runs: int = 3) -> float:
    with tempfile.NamedTemporaryFile(suffix=".image") as photo:
        photo.write(data)
        photo.flush()
        return median([float(subprocess.run([sys.executable, "-c", TIMED, photo.name], capture_output=True,
                                            text=True, check=True, cwd=REPO).stdout) for _ in range(runs)])


def main() -> None:
    candidates = {
        "JPEG, 27 scans (progressive, refinement scans repeated)": (hostile.slow_jpeg(), "6000x6000"),
    }
    sides = list(range(3000, 6301, 300))
    for name, make in {
        "PNG of noise": lambda s: encoded(noise(s, s), "PNG", compress_level=1),
        "lossless WebP of noise": lambda s: encoded(noise(s, s), "WEBP", lossless=True, method=0),
        "GIF of noise (256 colours)": lambda s: encoded(noise(s, s, "P"), "GIF"),
        "BMP, 24-bit": lambda s: encoded(noise(s, s), "BMP"),
        "baseline JPEG of noise, quality 100": lambda s: encoded(noise(s, s), "JPEG", quality=100),
    }.items():
        found = largest_accepted(make, sides)
        if found is not None:
            candidates[name] = (found[1], f"{found[0]}x{found[0]}")
    rows = [[name, size, f"{len(data):,}", f"{timed(data):.2f} s"] for name, (data, size) in candidates.items()]
    text = "\n".join([
        header("The slowest image of each format within the default image bounds", sys.argv), "",
        "Each image is the largest square of its kind (3000 to 6300 px a side, in steps of 300) that the default "
        "`[image]` bounds accept (50 MB a file, 40 Mpx, 200 MB decoded, 100 scans and 1e9 scanned pixels for a "
        "JPEG), of noise; decode_image in a process of its own, median of 3. `serve` takes bodies of 10 MB at most "
        "(`--max-body-bytes`), so over HTTP only the JPEGs and smaller images of the others reach a decoder.", "",
        markdown_table(["image", "pixels", "bytes", "decode"], rows), ""])
    write_report("slowest", text)


if __name__ == "__main__":
    main()
