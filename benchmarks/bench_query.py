"""Query time: `lookalike query` cold (a whole process for one photo) and warm (many photos in one call),
split into its parts; and the start time of `lookalike --help`.

    .venv/bin/python benchmarks/bench_query.py          # quick: 5 cold runs, 20 warm photos
    .venv/bin/python benchmarks/bench_query.py --full   # 9 cold runs, all 55 labelled photos

The gallery is the 879 congress portraits built by `lookalike build` (cached in benchmarks/.cache); the query
photos are the labelled photos of faces/people (other people, 1 face each, various sizes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import (REPO, congress_gallery, header, markdown_table, median, ms, percentile, repeat_timed,
                    shared_photos, write_report)

LOOKALIKE = [sys.executable, "-m", "lookalike_cli"]


def run(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(LOOKALIKE + args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def stage_times(data_dir: Path, photos: list[Path]) -> dict[str, list[float]]:
    """The parts of a query, timed in this process: imports and loading once, then per photo."""
    times: dict[str, list[float]] = {}

    def timed(name: str, func):
        started = time.perf_counter()
        result = func()
        times.setdefault(name, []).append(time.perf_counter() - started)
        return result

    timed("import lookalike_cli.answers.query (numpy, pyarrow)", lambda: __import__("lookalike_cli.answers.query"))
    from lookalike_cli.config import Config
    from lookalike_cli.imaging.decode import read_image
    from lookalike_cli.face.models import Face, FaceModels
    from lookalike_cli.answers.query import Lookalike

    config = Config()
    models = timed("model load (import dlib, 3 models)", FaceModels)
    engine = timed("gallery load (Parquet, calibration, index)", lambda: Lookalike(data_dir, config, models))
    for photo in photos:
        image = timed("decode", lambda: read_image(photo, config.image).pixels)
        rects, _, _ = timed("detect (HOG, upsample 1, full image)", lambda: models.detector.run(image, 1, 0.0))
        for rect in rects:
            box = (rect.left(), rect.top(), rect.right(), rect.bottom())
            points = timed("landmarks", lambda: models.landmarks(image, box))
            face = Face(box=box, score=0.0, landmarks=points)
            descriptor = timed("descriptor (num_jitters 1)", lambda: models.descriptor(image, face, 1))
            timed("search (top 1 person)", lambda: engine.nearest_people(descriptor, 1))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    data_dir = congress_gallery()
    photos = shared_photos("people/*/*")
    photos = photos if args.full else photos[:20]
    cold_runs = 9 if args.full else 5

    help_times = [run(["--help"]) for _ in range(cold_runs)]
    bare_python = repeat_timed(lambda: subprocess.run([sys.executable, "-c", "pass"]), cold_runs)
    bare_click = repeat_timed(lambda: subprocess.run([sys.executable, "-c", "import click"]), cold_runs)
    query = ["query", "--data-dir", str(data_dir)]
    cold, warm = [], []
    for _ in range(cold_runs):  # alternate one photo and all photos, so that load changes hit both
        cold.append(run(query + [str(photos[0])]))
        warm.append(run(query + [str(p) for p in photos]))
    per_photo = (median(warm) - median(cold)) / (len(photos) - 1)
    parts = stage_times(data_dir, photos)

    rows = [["`lookalike --help` (process start to exit)", ms(median(help_times)), ms(max(help_times))],
            ["`python -c pass` (interpreter alone)", ms(median(bare_python)), ms(max(bare_python))],
            ["`python -c 'import click'`", ms(median(bare_click)), ms(max(bare_click))],
            [f"`lookalike query` cold, 1 photo ({photos[0].parent.name}/{photos[0].name})", ms(median(cold)),
             ms(max(cold))],
            [f"`lookalike query` warm, {len(photos)} photos in one call", ms(median(warm)), ms(max(warm))],
            ["warm: each photo after the first", ms(per_photo), "-"]]
    stages = [[name, len(values), ms(median(values)), ms(percentile(values, 99)), ms(sum(values))]
              for name, values in parts.items()]
    sizes = []
    from PIL import Image

    for photo in photos:
        with Image.open(photo) as image:
            sizes.append(image.size[0] * image.size[1])
    text = "\n".join([
        header("Query", ["benchmarks/bench_query.py", *sys.argv[1:]]),
        f"Gallery: {data_dir.name} (879 congress portraits, exact search). Photos: {len(photos)} from faces/people, "
        f"median {median(sizes) / 1e6:.2f} Mpixel. Whole processes, median of {cold_runs} runs:\n",
        markdown_table(["what", "median ms", "max ms"], rows), "",
        "The parts, timed in one process (imports and loads once, then per photo or per face):\n",
        markdown_table(["part", "count", "median ms", "p99 ms", "total ms"], stages)])
    write_report("query-full" if args.full else "query-quick", text)


if __name__ == "__main__":
    main()
