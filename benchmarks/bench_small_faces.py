"""Tiny faces found by the detection fallback: is any other way of describing them answered right more often?

    .venv/bin/python benchmarks/bench_small_faces.py

The photos of faces/people degraded by DEGRADATIONS (shrunk, JPEG quality 35; a photo the shrink leaves as it is
counts once), kept when HOG's first look finds no face and the fallback finds one of under 12 px between the eyes
(evaluate.EYE_BANDS); each is answered leave-one-out (its person's mean over their other photos) among the
congress portraits, its descriptor computed each way:

- ``as is``: what lookalike does (landmarks and chip from the photo, one descriptor);
- ``10 jitters``: the mean over 10 jittered copies of the chip;
- ``enlarged``: the photo enlarged (Lanczos) until 30 px separate the eyes, landmarks and chip from that copy;
- ``68 landmarks``: the chip aligned on dlib's 68-point landmarks instead of the 5-point ones;
- ``matched gallery``: the gallery's chips brought down to 12 px between the eyes and back up (as blurred as the
  probe), the probe as is.

Reported per face: its size, and for each way the right person's rank among the 891 people (877 congress
portraits, 14 people of faces/people) and their distance.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np

from common import congress_gallery, faces_embeddings, header, markdown_table, write_report

DEGRADATIONS = ("shrink:120,jpeg:35", "shrink:160,jpeg:35", "shrink:200,jpeg:35")
ENLARGED_EYES = 30.0  # pixels between the eyes of the enlarged copy
MATCHED_EYES = 12.0  # pixels between the eyes the gallery's chips are brought down to
SAME_PEOPLE = {"joseph-r-biden-jr"}  # a congress portrait of a person of faces/people under another alias


def resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def chip_eye_distance(models, chip: np.ndarray) -> float:
    """Pixels between the eyes in an aligned chip (the same for every chip: the alignment puts them there)."""
    return models.detect(np.ascontiguousarray(chip))[0].eye_distance


def blurred_chip(chip: np.ndarray, factor: float) -> np.ndarray:
    """A chip shrunk by ``factor`` and enlarged back: the detail of a face that small."""
    side = chip.shape[0]
    return resized(resized(chip, (max(1, round(side * factor)),) * 2), (side, side))


class Ways:
    """The descriptor of a fallback face, each way."""

    def __init__(self, models):
        import dlib
        import face_recognition_models

        self.models = models
        self.dlib = dlib
        self.landmarks68 = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

    def describe(self, image: np.ndarray, face) -> dict[str, np.ndarray]:
        from lookalike_cli.face.models import CHIP_PADDING
        from lookalike_cli.face.resnet import CHIP_SIZE

        models, dlib = self.models, self.dlib
        factor = max(1.0, ENLARGED_EYES / face.eye_distance)
        height, width = image.shape[:2]
        large = resized(image, (round(width * factor), round(height * factor)))
        large_face = models.face(large, tuple(round(v * factor) for v in face.box), face.score, face.detector)
        shape = self.landmarks68(image, dlib.rectangle(*face.box))
        chip68 = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        as_is = models.descriptor(image, face)
        return {"as is": as_is, "10 jitters": models.descriptor(image, face, 10),
                "enlarged": models.descriptor(large, large_face),
                "68 landmarks": models.chip_descriptors(chip68[None])[0], "matched gallery": as_is}


def gallery_chips(models, rows) -> np.ndarray:
    """The aligned chips of gallery rows (their photos, boxes as embedded)."""
    from lookalike_cli.config import ImageConfig
    from lookalike_cli.imaging.decode import read_image

    return np.stack([models.chip(image, models.face(image, tuple(row["box"]), 0.0))
                     for row in rows for image in [read_image(row["path"], ImageConfig()).pixels]])


def rank_and_distance(vector: np.ndarray, people: np.ndarray, names: list[str], truth: str) -> tuple[int, float]:
    distances = np.linalg.norm(people - vector, axis=1)
    mine = distances[names.index(truth)]
    return int((distances < mine).sum()) + 1, float(mine)


def main() -> None:
    from lookalike_cli.io.artifacts import DataDir
    from lookalike_cli.config import Config, ImageConfig
    from lookalike_cli.evaluation.degrade import degrade, parse_degradation
    from lookalike_cli.evaluation.evaluate import EYE_BANDS, same_alias
    from lookalike_cli.imaging.decode import read_image
    from lookalike_cli.face.models import FaceModels

    config = Config()
    models = FaceModels()
    faces_rows, faces = DataDir(faces_embeddings()).vectors("embeddings")
    aliases = [row["alias"] for row in faces_rows]
    congress_rows, congress = DataDir(congress_gallery()).vectors("embeddings")
    kept = [i for i, row in enumerate(congress_rows)  # not the people of faces/people (Obama, Biden) again
            if same_alias(row["alias"]) not in {same_alias(alias) for alias in aliases} | SAME_PEOPLE]
    congress_rows, congress = [congress_rows[i] for i in kept], congress[kept]
    chips = gallery_chips(models, [*congress_rows, *faces_rows])
    factor = MATCHED_EYES / chip_eye_distance(models, chips[0])
    matched = models.chip_descriptors(np.stack([blurred_chip(chip, factor) for chip in chips]))
    galleries = {"sharp": (congress, faces), "matched": (matched[:len(congress)], matched[len(congress):])}
    names = [row["alias"] for row in congress_rows] + sorted(set(aliases))
    ways = Ways(models)
    rows, right, seen = [], {}, set()
    for spec in DEGRADATIONS:
        for index, row in enumerate(faces_rows):
            image = degrade(read_image(row["path"], ImageConfig()).pixels, parse_degradation(spec))
            if hashlib.sha256(image.tobytes()).digest() in seen or models.detect(
                    image, config.detect.upsample, config.detect.min_detection_score, config.detect.detect_max_size):
                continue
            seen.add(hashlib.sha256(image.tobytes()).digest())
            found = models.fallback_faces(image, config.detect)
            if not found or found[0].eye_distance >= EYE_BANDS[0]:
                continue
            face = found[0]
            cells = [f"{row['alias']}/{row['path'].rsplit('/', 1)[1]} {spec}", face.detector,
                     f"{face.eye_distance:.1f}"]
            others = [i for i in range(len(aliases)) if i != index]
            people = {gallery: np.concatenate([in_congress, [in_faces[[i for i in others if aliases[i] == alias]]
                                                             .mean(axis=0) for alias in sorted(set(aliases))]])
                      for gallery, (in_congress, in_faces) in galleries.items()}
            for way, vector in ways.describe(image, face).items():
                rank, distance = rank_and_distance(vector, people["matched" if way == "matched gallery" else "sharp"],
                                                   names, row["alias"])
                right.setdefault(way, []).append(rank == 1)
                cells.append(f"{rank} ({distance:.2f})")
            rows.append(cells)
    text = "\n".join([
        header("Tiny faces found by the fallback, described five ways", ["benchmarks/bench_small_faces.py",
                                                                         *sys.argv[1:]]),
        f"{len(rows)} faces of under {EYE_BANDS[0]} px between the eyes found by the fallback in faces/people photos "
        f"degraded by {', '.join(DEGRADATIONS)}, "
        f"answered leave-one-out among {len(congress)} congress portraits (not Obama's and Biden's) and the "
        f"{len(set(aliases))} people of faces/people (the mean of their other photos). Per face and way: the "
        f"rank of the right person, and (their distance); the same-person threshold is 0.6.\n",
        markdown_table(["photo", "look", "eye distance px", *right], rows), "",
        "Right (rank 1): " + ", ".join(f"{way} {sum(hits)} of {len(hits)}" for way, hits in right.items())])
    write_report("small-faces", text)


if __name__ == "__main__":
    main()
