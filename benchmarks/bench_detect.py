"""Detection on a downscaled copy of large photos (`detect.detect_max_size`): speed-up, and the change in faces
found and in descriptors, against detection on the full image.

    .venv/bin/python benchmarks/bench_detect.py          # quick: 8 upscaled portraits + 8 labelled photos
    .venv/bin/python benchmarks/bench_detect.py --full   # 30 + all 55 labelled photos and the group photos

Photos: congress portraits upscaled 4x and 8x (900x1100 and 1800x2200 px, bicubic), and the labelled photos of faces/people and
faces/hard (their own sizes). For each photo and each limit the whole `FaceModels.detect` is timed (HOG
detection, upsample 1, on the shrunk copy, landmarks on the full image), then the descriptor of every face
found (num_jitters 1, full image) is compared with the one found without a limit.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from common import CONGRESS, FACES, header, markdown_table, median, require_shared, shared_photos, write_report

LIMITS = (0, 1600, 1200, 1024, 800, 640)


def photos(full: bool) -> list[tuple[str, np.ndarray]]:
    from PIL import Image

    from lookalike_cli.config import ImageConfig
    from lookalike_cli.imaging.decode import read_image

    portraits = sorted((CONGRESS / "images").glob("*.jpg"))
    found = []
    for factor, chosen in ((4, portraits[:20 if full else 6]), (8, portraits[100:110 if full else 102])):
        for path in chosen:
            image = Image.open(path).convert("RGB")
            found.append((f"congress x{factor}/{path.name}", np.asarray(
                image.resize((image.width * factor, image.height * factor), Image.BICUBIC))))
    labelled, hard = shared_photos("people/*/*"), shared_photos("hard/*")
    for path in (labelled + hard) if full else labelled[::7][:8]:
        found.append((str(path.relative_to(FACES)), read_image(path, ImageConfig()).pixels))
    return found


def match(face, faces) -> object | None:
    """The face of ``faces`` whose box centre is nearest to ``face``'s, if it lies inside ``face``'s box."""
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    best = min(faces, key=lambda f: abs((f.box[0] + f.box[2]) / 2 - cx) + abs((f.box[1] + f.box[3]) / 2 - cy),
               default=None)
    if best is None:
        return None
    bx, by = (best.box[0] + best.box[2]) / 2, (best.box[1] + best.box[3]) / 2
    return best if face.box[0] <= bx <= face.box[2] and face.box[1] <= by <= face.box[3] else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    require_shared()
    from lookalike_cli.face.models import FaceModels

    models = FaceModels()
    images = photos(args.full)
    stats = {limit: {"seconds": [], "speedup": [], "found": 0, "missed": 0, "extra": 0, "l2": [], "shrunk": 0}
             for limit in LIMITS}
    for name, image in images:
        reference = None
        for limit in LIMITS:
            shrunk = bool(limit) and max(image.shape[:2]) > limit
            if limit and not shrunk:
                faces, seconds = reference, reference_seconds  # no shrinking: the same work
            else:
                started = time.perf_counter()
                faces = models.detect(image, 1, 0.0, limit)
                seconds = time.perf_counter() - started
            if reference is None:
                reference, reference_seconds = faces, seconds
                descriptors = [models.descriptor(image, face, 1) for face in faces]
            entry = stats[limit]
            entry["seconds"].append(seconds)
            entry["speedup"].append(reference_seconds / seconds)
            entry["found"] += len(faces)
            entry["shrunk"] += shrunk
            matched = [match(face, faces) for face in reference]
            entry["missed"] += sum(m is None for m in matched)
            entry["extra"] += len(faces) - sum(m is not None for m in matched)
            for face, other, descriptor in zip(reference, matched, descriptors):
                if other is not None and shrunk:
                    entry["l2"].append(0.0 if other == face else
                                       float(np.linalg.norm(models.descriptor(image, other, 1) - descriptor)))
    rows = []
    for limit, entry in stats.items():
        l2 = entry["l2"] or [0.0]
        rows.append([limit or "none (full image)", entry["shrunk"], f"{median(entry['seconds']) * 1000:.0f}",
                     f"{sum(entry['seconds']):.1f}", f"{median(entry['speedup']):.2f}x",
                     f"{sum(stats[0]['seconds']) / sum(entry['seconds']):.2f}x", entry["found"], entry["missed"],
                     entry["extra"], f"{median(l2):.4f}", f"{max(l2):.4f}"])
    sizes = [f"{image.shape[1]}x{image.shape[0]}" for _, image in images]
    text = "\n".join([
        header("Detection on a downscaled copy", ["benchmarks/bench_detect.py", *sys.argv[1:]]),
        f"{len(images)} photos ({', '.join(sorted(set(sizes)))} px); reference: no limit "
        f"({stats[0]['found']} faces). Descriptor change: L2 between the descriptor of a face found on the shrunk "
        "copy and of the same face found on the full image, over the photos shrunk (for scale: the same-person "
        "threshold is 0.6, and the nearest other person of a congress portrait is at 0.55 +- 0.05).\n",
        markdown_table(["detect_max_size", "photos shrunk", "median ms/photo", "total s", "median speed-up", "total speed-up",
                        "faces", "missed", "extra", "median L2 change", "max L2 change"], rows)])
    write_report("detect-full" if args.full else "detect-quick", text)


if __name__ == "__main__":
    main()
