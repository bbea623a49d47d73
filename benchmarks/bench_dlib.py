"""dlib's stages, one by one: HOG detection by image size, landmarks, descriptor with num_jitters 0/1/10;
for the installed dlib and, side by side, for the OpenBLAS build of `make dlib-blas-wheel` when it exists.

    .venv/bin/python benchmarks/bench_dlib.py          # quick: 2 rounds
    .venv/bin/python benchmarks/bench_dlib.py --full   # 4 rounds

Each build runs in its own child process (the BLAS one with its wheel unpacked first on PYTHONPATH,
OPENBLAS_NUM_THREADS=1 for both); rounds alternate the builds; the table holds the medians of the rounds'
medians. The descriptors of both builds are compared (largest L2 difference).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from common import CACHE, FACES, header, markdown_table, median, ms, repeat_timed, require_shared, write_report

WHEELS = Path(os.environ.get("DLIB_CACHE", Path.home() / ".cache" / "lookalike" / "dlib-blas"))
PHOTO = "people/barack_obama/1.jpg"
SIZES = (512, 1024, 2048)
JITTERS = (0, 1, 10)


def child(photo: str, repeats: int) -> dict:
    """Stage medians of this process's dlib (printed as JSON by the child)."""
    from PIL import Image

    from common import dlib_build
    from lookalike_cli.config import ImageConfig
    from lookalike_cli.imaging.decode import read_image
    from lookalike_cli.face.models import Face, FaceModels

    models = FaceModels()
    image = read_image(photo, ImageConfig()).pixels
    result = {"build": dlib_build(), "stages": {}, "descriptors": {}}
    for size in SIZES:
        factor = size / max(image.shape[:2])
        resized = np.asarray(Image.fromarray(image).resize((round(image.shape[1] * factor),
                                                            round(image.shape[0] * factor))))
        models.detector(resized, 1)  # warm-up
        result["stages"][f"detect at {size} px (upsample 1)"] = median(
            repeat_timed(lambda: models.detector(resized, 1), max(1, repeats // (size // 512))))
    rect = max(models.detector(image, 1), key=lambda r: r.area())
    box = (rect.left(), rect.top(), rect.right(), rect.bottom())
    result["stages"]["landmarks (5 points)"] = median(repeat_timed(lambda: models.landmarks(image, box),
                                                                   repeats * 10))
    face = Face(box=box, score=0.0, landmarks=models.landmarks(image, box))
    for jitters in JITTERS:
        models.descriptor(image, face, jitters, "dlib")
        result["stages"][f"descriptor, num_jitters {jitters}"] = median(
            repeat_timed(lambda: models.descriptor(image, face, jitters, "dlib"), repeats if jitters < 10 else 2))
        result["descriptors"][jitters] = models.descriptor(image, face, jitters, "dlib").tolist()
    return result


def blas_site() -> Path | None:
    """The OpenBLAS wheel unpacked into the cache, or None when `make dlib-blas-wheel` has not run."""
    wheels = sorted(WHEELS.glob("dlib-*.whl"))
    if not wheels:
        return None
    target = CACHE / "dlib-blas-site" / wheels[-1].stem
    if not target.exists():
        with zipfile.ZipFile(wheels[-1]) as archive:
            archive.extractall(target)
    return target


def run_child(site: Path | None, photo: str, repeats: int) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, __file__, "--child", photo, str(repeats)], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    require_shared()
    rounds, repeats = (4, 10) if args.full else (2, 5)
    builds = {"installed": None}
    site = blas_site()
    if site is not None:
        builds["OpenBLAS wheel"] = site
    results: dict[str, list[dict]] = {name: [] for name in builds}
    for _ in range(rounds):
        for name, path in builds.items():
            results[name].append(run_child(path, str(FACES / PHOTO), repeats))
    names = list(builds)
    stages = list(results[names[0]][0]["stages"])
    table = {name: {stage: median([r["stages"][stage] for r in runs]) for stage in stages}
             for name, runs in results.items()}
    headers = ["stage"] + [f"{name}: {results[name][0]['build']} ms" for name in names]
    if len(names) == 2:
        headers.append("ratio")
    rows = []
    for stage in stages:
        row = [stage] + [ms(table[name][stage]) for name in names]
        if len(names) == 2:
            row.append(f"{table[names[0]][stage] / table[names[1]][stage]:.2f}x")
        rows.append(row)
    lines = [header("dlib stages", ["benchmarks/bench_dlib.py", *sys.argv[1:]]),
             f"Photo: faces/{PHOTO} resized for detection; median of {rounds} rounds of {repeats} calls "
             "(OPENBLAS_NUM_THREADS=1).\n", markdown_table(headers, rows), ""]
    if len(names) == 2:
        for jitters in ("0", "1"):
            a, b = (np.asarray(results[name][0]["descriptors"][jitters]) for name in names)
            lines.append(f"Descriptor difference between the builds, num_jitters {jitters}: L2 "
                         f"{np.linalg.norm(a - b):.2e}.")
    else:
        lines.append(f"No OpenBLAS wheel in {WHEELS}: `make dlib-blas-wheel` builds it (15-25 min on 2 cores).")
    write_report("dlib-full" if args.full else "dlib-quick", "\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
