"""Stage 2, embed: a 128-d dlib descriptor for the face of every accepted gallery photo.

Descriptors are cached per (image content, face box, model, jitters): re-running after adding photos
computes only the new ones, and a killed run resumes from its checkpoint parts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .artifacts import Checkpoint, DataDir, read_table, write_table
from .config import Config
from .errors import LookalikeError
from .images import ImageRejected, read_image
from .models import Face, model_id, model_workers, process_models
from .parallel import WorkerPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedSummary:
    faces: int
    computed: int
    failed: int
    people: int
    nodes: dict[str, int] = field(default_factory=dict)  # descriptors computed per cluster node (Ray)


@dataclass(frozen=True)
class EmbedTask:
    path: str
    box: tuple[int, int, int, int]
    landmarks: tuple[tuple[float, float], ...]
    num_jitters: int
    max_pixels: int
    models_dir: str


def embed_key(models_dir: str, num_jitters: int) -> str:
    """The settings that change a descriptor: cache key beside the image content and face box."""
    return f"model={model_id(models_dir)};num_jitters={num_jitters}"


def embed_face(task: EmbedTask) -> tuple[str, list[float] | None, str]:
    """(path, descriptor or None, error) for one accepted photo."""
    try:
        image = read_image(task.path, task.max_pixels)
        face = Face(box=task.box, score=0.0, landmarks=task.landmarks)
        return task.path, process_models(task.models_dir).descriptor(image, face, task.num_jitters).tolist(), ""
    except ImageRejected as exc:
        return task.path, None, str(exc)
    except Exception as exc:  # a file changed since filtering, a dlib error: report, don't stop
        log.debug("embedding failed on %s", task.path, exc_info=True)
        return task.path, None, f"{type(exc).__name__}: {exc}"


def embed_failed(task: EmbedTask, why: str) -> tuple[str, None, str]:
    """The result of a photo whose worker process died on it (a crash in a decoder or dlib)."""
    return task.path, None, why


def _cache_key(row: dict) -> tuple:
    return row["sha256"], tuple(row["box"]), row["embed_key"]


def embed_faces(data_dir: str | Path, config: Config = Config(), workers: WorkerPool | None = None) -> EmbedSummary:
    """Run the embed stage on the accepted rows of ``filter.parquet``; writes ``embeddings.parquet``.
    ``workers``: a pool to use (default: one of ``config.runtime.workers`` for this stage)."""
    data = DataDir(Path(data_dir))
    filtered = read_table(data.require(data.filter, "filter"), "filter", "filter").to_pylist()
    accepted = [row for row in filtered if row["status"] == "accepted"]
    key = embed_key(config.runtime.models_dir, config.embed.num_jitters)
    checkpoint = Checkpoint(data, "embed", "embeddings")
    cache: dict[tuple, dict] = {}
    if data.embeddings.exists():
        try:
            cache = {_cache_key(r): r for r in read_table(data.embeddings, "embeddings", "embed").to_pylist()}
        except LookalikeError as exc:
            log.warning("ignoring the previous embeddings: %s", exc)
    cache.update({_cache_key(r): r for r in checkpoint.read("embed")})

    rows: list[dict | None] = []
    todo: list[EmbedTask] = []
    position: dict[str, int] = {}
    for row in accepted:
        out = {"path": row["path"], "alias": row["alias"], "sha256": row["sha256"], "box": row["box"],
               "embed_key": key}
        cached = cache.get(_cache_key(out))
        if cached:
            rows.append(out | {"embedding": cached["embedding"]})
            continue
        position[row["path"]] = len(rows)
        rows.append(None)
        landmarks = tuple(zip(row["landmarks"][0::2], row["landmarks"][1::2]))
        todo.append(EmbedTask(row["path"], tuple(row["box"]), landmarks, config.embed.num_jitters,
                              config.filter.max_image_pixels, config.runtime.models_dir))

    log.info("embed: %d faces, %d cached, %d to compute", len(accepted), len(accepted) - len(todo), len(todo))
    failed = 0
    nodes: dict[str, int] = {}
    if todo:
        checkpoint.plan(len(todo))
        by_path = {row["path"]: row for row in accepted}
        with model_workers(config.runtime, shared=workers) as pool:
            for path, embedding, error in pool.map(embed_face, todo, desc="embed", failed=embed_failed):
                if embedding is None:
                    failed += 1
                    log.warning("cannot embed %s: %s", path, error)
                    continue
                source = by_path[path]
                out = {"path": path, "alias": source["alias"], "sha256": source["sha256"], "box": source["box"],
                       "embed_key": key, "embedding": embedding}
                rows[position[path]] = out
                checkpoint.add(out)
            nodes = dict(pool.nodes)
        checkpoint.flush()

    final = [row for row in rows if row is not None]
    write_table(data.embeddings, "embeddings", final)
    checkpoint.clear()
    return EmbedSummary(faces=len(final), computed=len(todo) - failed, failed=failed,
                        people=len({row["alias"] for row in final}), nodes=nodes)
