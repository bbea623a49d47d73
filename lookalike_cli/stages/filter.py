"""Stage 1, filter: keep the gallery photos that show one usable face, and record why the others were not.

Detection (the slow part) is cached per image content and detection settings; the accept/reject decision
is re-made from the cached geometry on every run, so changing a threshold costs nothing.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, DetectConfig, FilterConfig, ImageConfig
from ..errors import Failure, LookalikeError
from ..face.model_files import CNN_DETECTOR_FILE, models_folder
from ..face.models import model_workers, process_models
from ..imaging.decode import ImageRejected, read_image
from ..imaging.gallery import GalleryImage, list_gallery, sha256_of
from ..imaging.geometry import face_problem
from ..io.artifacts import Checkpoint, DataDir
from ..io.catalog import load_catalog, person_row
from ..runtime.engines import Engine

log = logging.getLogger(__name__)

# Reasons decided before any face is looked for; rows with a retryable one are not reused from the cache.
RETRY_REASONS = {"unreadable", "error", "timeout", "crashed"}


@dataclass(frozen=True)
class FilterSummary:
    images: int
    accepted: int
    people: int
    people_with_faces: int
    reasons: dict[str, int]
    detected: int
    nodes: dict[str, int] = field(default_factory=dict)  # images detected per cluster node (Ray)


@dataclass(frozen=True)
class DetectTask:
    path: str
    detect: DetectConfig
    image: ImageConfig
    fallback: bool  # filter.gallery_fallback: the detection fallback when HOG finds no face
    models_dir: str
    size: int  # bytes: detection takes longer on larger files


def detect_key(detect: DetectConfig, image: ImageConfig, fallback: bool = False) -> str:
    """The settings that change what detection finds in an image: the cache key beside its content hash (with
    ``fallback``, the detection fallback's settings too)."""
    key = (f"upsample={detect.upsample};min_score={detect.min_detection_score};"
           f"max_size={detect.detect_max_size};max_pixels={image.max_image_pixels};"
           f"max_decoded_bytes={image.max_decoded_bytes};formats={image.image_formats}")
    if fallback:
        key += (f";fallback_stretch_span={detect.fallback_stretch_span};"
                f"fallback_hog_pixels={detect.fallback_hog_pixels};cnn_pixels={detect.cnn_pixels};"
                f"cnn_min_score={detect.cnn_min_score};fallback_min_eye_distance={detect.fallback_min_eye_distance};"
                f"fallback_max_tilt={detect.fallback_max_tilt}")
    return key


def decide(row: dict, config: FilterConfig) -> tuple[str, str]:
    """(status, reason) of a detected image under the filter thresholds; reason is "ok" when accepted."""
    if row["n_faces"] is None:
        return "rejected", row["reason"]
    if min(row["width"], row["height"]) < config.min_image_size:
        return "rejected", "too_small"
    if row["n_faces"] == 0:
        return "rejected", "no_face"
    if row["n_faces"] > 1 and config.multiple_faces == "reject":
        return "rejected", "several_faces"
    problem = face_problem(row["eye_distance"], row["tilt"], config.min_eye_distance, config.max_tilt)
    return ("rejected", problem) if problem else ("accepted", "ok")


def undetected(path: str, reason: str = "", detail: str = "") -> dict:
    """The detection columns of an image's ``filter`` row before (or without) detection."""
    return {"path": path, "width": None, "height": None, "n_faces": None, "box": None, "landmarks": None,
            "score": None, "eye_distance": None, "tilt": None, "reason": reason, "detail": detail}


def detection_failed(task: DetectTask, failure: Failure) -> dict:
    """The row of an image whose worker was stopped on it (over the decode time limit) or died on it."""
    return undetected(task.path, failure.reason, failure.detail)


def detect_image(task: DetectTask) -> dict:
    """Decode one image and find its faces: the detection columns of its ``filter`` row."""
    row = undetected(task.path)
    try:
        image = read_image(task.path, task.image).pixels
        row["height"], row["width"] = image.shape[:2]
        models = process_models(task.models_dir)
        boxes, look = models.first_look(image, task.detect)
        faces = boxes or (models.fallback_faces(image, task.detect) if task.fallback else [])
        row["n_faces"] = len(faces)
        if faces:
            face = models.face(image, *boxes[0], look) if boxes else faces[0]
            row.update(box=list(face.box), landmarks=[v for point in face.landmarks for v in point],
                       score=face.score, eye_distance=face.eye_distance, tilt=face.tilt)
    except ImageRejected as exc:
        row.update(reason=exc.reason, detail=exc.detail)
    except Exception as exc:  # one broken image must not stop a run over thousands
        log.debug("detection failed on %s", task.path, exc_info=True)
        row.update(reason="error", detail=f"{type(exc).__name__}: {exc}")
    return row


def people_rows(images: list[GalleryImage], catalog: str | Path | None) -> list[dict]:
    """``people`` rows: the catalog's entries, plus aliases found only in the images (named by alias)."""
    rows = load_catalog(catalog) if catalog else []
    known = {row["alias"] for row in rows}
    extra = sorted({image.alias for image in images if not image.problem} - known)
    if catalog and extra:
        log.warning("%d people in the images folder are not in the catalog; their alias is their name",
                    len(extra))
    return rows + [person_row({"alias": alias}) for alias in extra]


def filter_images(images_dir: str | Path, data_dir: str | Path, catalog: str | Path | None = None,
                  config: Config = Config(), workers: Engine | None = None) -> FilterSummary:
    """Run the filter stage over ``images_dir``; writes ``filter.parquet`` and ``people.parquet``.
    ``workers``: a pool to use (default: one of ``config.runtime.workers`` for this stage)."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise LookalikeError(f"images folder {images_dir} does not exist or is not a folder")
    if config.filter.gallery_fallback:
        models_folder(config.runtime.models_dir, CNN_DETECTOR_FILE)  # said once, not as an error per photo
    data = DataDir(data_dir)
    with data.locked("filter"):
        return _filter(images_dir, data, catalog, config, workers)


def _filter(images_dir: Path, data: DataDir, catalog: str | Path | None, config: Config,
            workers: Engine | None) -> FilterSummary:
    images = list_gallery(images_dir)
    people = people_rows(images, catalog)
    key = detect_key(config.detect, config.image, config.filter.gallery_fallback)
    checkpoint = Checkpoint(data, "filter")
    previous = checkpoint.resume()
    by_stat = {(r["path"], r["size"], r["mtime_ns"]): r["sha256"] for r in previous}
    by_content = {(r["sha256"], r["detect_key"]): r for r in previous if r["reason"] not in RETRY_REASONS}

    rows: dict[str, dict] = {}
    todo: list[DetectTask] = []
    for image in images:
        row = {"path": image.path, "alias": image.alias, "sha256": "", "size": 0, "mtime_ns": 0,
               "detect_key": key, "width": None, "height": None, "n_faces": None, "box": None,
               "landmarks": None, "score": None, "eye_distance": None, "tilt": None,
               "status": "rejected", "reason": "bad_file", "detail": image.problem or ""}
        rows[image.path] = row
        if image.problem:
            continue
        try:
            stat = os.stat(image.path)
            sha = by_stat.get((image.path, stat.st_size, stat.st_mtime_ns)) or sha256_of(image.path)
        except OSError as exc:
            row.update(reason="unreadable", detail=exc.strerror or str(exc))
            continue
        row.update(sha256=sha, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        cached = by_content.get((sha, key))
        if cached:
            row.update({k: cached[k] for k in ("width", "height", "n_faces", "box", "landmarks", "score",
                                               "eye_distance", "tilt", "reason", "detail")})
        else:
            todo.append(DetectTask(image.path, config.detect, config.image, config.filter.gallery_fallback,
                                   config.runtime.models_dir, stat.st_size))

    log.info("filter: %d images, %d cached, %d to detect", len(images), len(images) - len(todo), len(todo))
    nodes: dict[str, int] = {}
    if todo:
        checkpoint.plan(len(todo))
        todo.sort(key=lambda task: task.size, reverse=True)  # the slowest first, so that no worker ends alone
        with model_workers(config.runtime, shared=workers) as pool:
            for result in pool.map(detect_image, todo, desc="filter", failed=detection_failed):
                row = rows[result["path"]]
                row.update(result)
                checkpoint.add(row)
            nodes = dict(pool.nodes)
        checkpoint.flush()

    for row in rows.values():
        row["status"], row["reason"] = decide(row, config.filter)
    final = list(rows.values())
    data.write("filter", final)
    data.write("people", people)
    checkpoint.clear()

    reasons = Counter(row["reason"] for row in final if row["status"] == "rejected")
    accepted = [row for row in final if row["status"] == "accepted"]
    return FilterSummary(images=len(final), accepted=len(accepted), people=len(people),
                         people_with_faces=len({row["alias"] for row in accepted}),
                         reasons=dict(sorted(reasons.items())), detected=len(todo), nodes=nodes)
