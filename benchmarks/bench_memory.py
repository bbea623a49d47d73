"""A recognition worker's peak memory per hostile photo, above what it holds once its models and gallery are loaded:
the figure that `--max-decoded-bytes` bounds (issue 24).

    .venv/bin/python benchmarks/bench_memory.py

Each photo is answered by a process of its own that first loads the demo gallery and every model a worker may
load, then starts its high-water mark of resident memory afresh (/proc/self/clear_refs; VmHWM: ru_maxrss would
carry the peak of the process it was forked from), decodes the photo, reads the peak, answers it with
`answer_bytes` (decode, detection, the fallback where HOG finds no face, descriptors, the answer picture) and
reads the peak again. The inputs are built from their recipes in tests/hostile.py, here, and handed over in a file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from bench_serve import demo_gallery
from common import REPO, header, markdown_table, write_report

sys.path.insert(0, str(REPO / "tests"))
import hostile  # noqa: E402  (the hostile inputs, built from their recipes)

MB = 1 << 20
INPUTS = {
    "the demo selfie": lambda: (REPO / "data/demo/selfie.jpg").read_bytes(),
    "JPEG of 27 scans, 36 Mpx (the slowest allowed)": hostile.slow_jpeg,
    "16-bit PNG, 39.6 Mpx": lambda: hostile.sixteen_bit_png(6000, 6600),
    "RGBA PNG, 39.6 Mpx (refused)": lambda: hostile.rgba_png(6000, 6600),
    "CMYK JPEG, 39.6 Mpx": lambda: hostile.encoded(hostile.Image.new("CMYK", (6000, 6600), (9, 9, 9, 9)), "JPEG"),
    "lossless WebP, 16000x1700 (refused)": lambda: hostile.flat_webp(16000, 1700),
    "lossless WebP, 4000x3000": lambda: hostile.flat_webp(4000, 3000),
    "1x1 JPEG of 2.4 million comments (refused)": lambda: hostile.comment_bomb_jpeg(2_400_000),
    "collage of 64 faces": lambda: hostile.collage(64),
}
MEASURE = """
import json, sys
from pathlib import Path
from lookalike_cli.answers.query import Lookalike
from lookalike_cli.config import Config
from lookalike_cli.imaging.decode import ImageRejected, decode_image
engine = Lookalike({data_dir!r}, Config())
engine.models.cnn_detector  # every model a worker may load, the fallback's CNN included
data = Path({path!r}).read_bytes()
def status(key):
    line = next(line for line in open("/proc/self/status") if line.startswith(key + ":"))
    return int(line.split()[1]) * 1024
def peak():
    return status("VmHWM")
Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from here
loaded = status("VmRSS")
try:
    decoded = decode_image(data, engine.config.image)
    del decoded
except ImageRejected:
    pass
decoded = peak()
result, picture = engine.answer_bytes(data, "photo", picture=True)
print(json.dumps({{"loaded": loaded, "decoded": decoded, "answered": peak(), "faces": len(result.faces),
                  "reason": result.reason, "detectors": sorted({{face.detector for face in result.faces}})}}))
"""


def measure(data: bytes, data_dir: str) -> dict:
    """The peaks of a process that loads a worker's models, decodes ``data``, then answers it."""
    with tempfile.NamedTemporaryFile(suffix=".photo") as photo:
        photo.write(data)
        photo.flush()
        code = MEASURE.format(data_dir=data_dir, path=photo.name)
        output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    data_dir = str(demo_gallery())
    bound = 200_000_000
    rows = []
    for name, make in INPUTS.items():
        data = make()
        found = measure(data, data_dir)
        decode, answer = found["decoded"] - found["loaded"], found["answered"] - found["loaded"]
        rows.append([name, f"{len(data):,}", found["reason"] or f"{found['faces']} faces "
                     f"({', '.join(found['detectors']) or 'none'})", f"{found['loaded'] / MB:.0f}",
                     f"{decode / MB:.0f}", f"{decode / bound:.2f}", f"{answer / MB:.0f}"])
    text = "\n".join([
        header("A recognition worker's peak memory per hostile photo", sys.argv), "",
        "One process per photo: the demo gallery and every model a worker may load (the detection fallback's CNN "
        "included: about 240 MB at its peak) loaded first (`loaded`), then the photo decoded alone, then answered "
        "with its picture; each figure is the peak resident memory above `loaded`, the decode's against "
        f"`--max-decoded-bytes` ({bound / 1e6:.0f} MB).", "",
        markdown_table(["photo", "bytes", "answer", "loaded MiB", "decode MiB", "decode / bound",
                        "answer MiB"], rows), ""])
    write_report("memory", text)


if __name__ == "__main__":
    main()
