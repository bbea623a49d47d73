"""Embedding throughput: the project's filter + embed stages vs the bare dlib calls on the same images, with
1 and 2 worker processes.

    .venv/bin/python benchmarks/bench_embed.py          # quick: 60 congress portraits + 20 labelled photos
    .venv/bin/python benchmarks/bench_embed.py --full   # 120 + all 55 labelled photos, 3 rounds

The bare path is what any program must do per image: decode (Pillow), HOG detection (upsample 1, on a copy
shrunk to detect_max_size as the stage does), 5-point landmarks, descriptor (num_jitters 1), in one process with
the models already loaded. The project's path is
`filter_images` + `embed_faces` into an empty data directory, sharing one worker pool as `build` does (hashing, Parquet, checkpoints, decoding twice:
once per stage). Rounds alternate the variants, so that a busy machine slows all of them alike.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import (CONGRESS, FACES, header, markdown_table, median, require_shared, shared_photos,
                    write_report)


def sample_images(congress: int, faces: int) -> list[Path]:
    portraits = sorted((CONGRESS / "images").glob("*.jpg"))[:congress]
    labelled = shared_photos("people/*/*")[:faces]
    return portraits + labelled


def gallery_folder(images: list[Path], root: Path) -> Path:
    """A gallery tree (one folder per person) of copies of ``images``."""
    folder = root / "images"
    for number, path in enumerate(images):
        person = folder / (path.parent.name if path.parent.parent == FACES / "people" else path.stem)
        person.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, person / f"{number}{path.suffix}")
    return folder


def bare_dlib(images: list[Path], num_jitters: int) -> float:
    """Seconds for decode + detect (same settings as the stage) + landmarks + descriptor of every image, in
    this process with the models loaded: the model calls without the stages' bookkeeping."""
    from lookalike_cli.config import Config
    from lookalike_cli.config import ImageConfig
    from lookalike_cli.imaging.decode import read_image
    from lookalike_cli.face.models import process_models

    detect = Config().detect
    models = process_models()
    started = time.perf_counter()
    for path in images:
        image = read_image(path, ImageConfig()).pixels
        faces = models.detect(image, detect.upsample, detect.min_detection_score, detect.detect_max_size)
        if faces:
            models.descriptor(image, faces[0], num_jitters)
    return time.perf_counter() - started


def project_path(folder: Path, workers: int, num_jitters: int) -> tuple[float, int]:
    """Seconds for `filter` + `embed` into a fresh data directory, sharing one worker pool as `lookalike build`
    does, and the descriptors made."""
    from lookalike_cli.config import Config
    from lookalike_cli.stages.embed import embed_faces
    from lookalike_cli.stages.filter import filter_images
    from lookalike_cli.face.models import model_workers

    config = Config()
    config = replace(config, runtime=replace(config.runtime, workers=workers),
                     embed=replace(config.embed, num_jitters=num_jitters))
    with tempfile.TemporaryDirectory() as data_dir:
        started = time.perf_counter()
        with model_workers(config.runtime) as workers:
            filter_images(folder, data_dir, None, config, workers)
            faces = embed_faces(data_dir, config, workers).faces
        return time.perf_counter() - started, faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    require_shared()
    images = sample_images(120, 55) if args.full else sample_images(60, 20)
    rounds = 3 if args.full else 2
    num_jitters = 1
    from lookalike_cli.face.models import process_models

    process_models()  # the bare path and the 1-worker path run here: load the models before timing
    times: dict[str, list[float]] = {"bare dlib, 1 process": [], "filter + embed, --workers 1": [],
                                     "filter + embed, --workers 2": []}
    faces = 0
    with tempfile.TemporaryDirectory() as root:
        folder = gallery_folder(images, Path(root))
        for _ in range(rounds):
            times["bare dlib, 1 process"].append(bare_dlib(images, num_jitters))
            seconds, faces = project_path(folder, 1, num_jitters)
            times["filter + embed, --workers 1"].append(seconds)
            seconds, faces = project_path(folder, 2, num_jitters)
            times["filter + embed, --workers 2"].append(seconds)
    bare = median(times["bare dlib, 1 process"])
    one = median(times["filter + embed, --workers 1"])
    rows = [[name, f"{median(values):.2f} s", f"{len(images) / median(values):.2f}",
             f"{median(values) / bare:.2f}", f"{one / median(values):.2f}x",
             " ".join(f"{v:.2f}" for v in values)] for name, values in times.items()]
    text = "\n".join([
        header("Embedding throughput", ["benchmarks/bench_embed.py", *sys.argv[1:]]),
        f"{len(images)} images ({faces} usable faces), num_jitters {num_jitters}, median of {rounds} rounds "
        "(variants alternate within each round). Per-stage dlib costs and num_jitters 0/1/10: see the dlib "
        "report.\n",
        markdown_table(["path", "median time", "images/s", "time / bare dlib", "speed-up vs 1 worker",
                        "rounds (s)"], rows),
        "", "The 1-worker path and the bare path run in this process with the models loaded; 2 workers start "
        "two processes (forkserver) that each load the models once for both stages, which is inside the time."])
    write_report("embed-full" if args.full else "embed-quick", text)


if __name__ == "__main__":
    main()
