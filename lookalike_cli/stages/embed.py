"""Stage 2, embed: a 128-d dlib descriptor for the face of every accepted gallery photo.

Descriptors are cached per (image content, face box, model, jitters): re-running after adding photos
computes only the new ones, and a killed run resumes from its checkpoint parts. Each row's key also names the
descriptor backend that computed it; the backends agree within 1e-4, so the cache serves either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, ImageConfig
from ..errors import Failure
from ..face.descriptors import descriptor_backend
from ..face.model_files import embed_key, parse_embed_key
from ..face.models import Face, model_workers, process_models
from ..imaging.decode import ImageRejected, read_image
from ..io.artifacts import Checkpoint, DataDir
from ..runtime.engines import Engine

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
    image: ImageConfig
    models_dir: str
    size: tuple[int, int]  # (width, height) of the image as the filter decoded it: the landmarks' frame
    backend: str


def embed_face(task: EmbedTask) -> tuple[str, list[float] | None, str]:
    """(path, descriptor or None, error) for one accepted photo."""
    try:
        image = read_image(task.path, task.image).pixels
        if image.shape[1::-1] != task.size:
            return task.path, None, (f"decoded at {image.shape[1]}x{image.shape[0]} pixels, not at the filter's "
                                     f"{task.size[0]}x{task.size[1]}: run filter again with the same image settings")
        face = Face(box=task.box, score=0.0, landmarks=task.landmarks)
        return task.path, process_models(task.models_dir).descriptor(image, face, task.num_jitters,
                                                                      task.backend).tolist(), ""
    except ImageRejected as exc:
        return task.path, None, str(exc)
    except Exception as exc:  # a file changed since filtering, a dlib error: report, don't stop
        log.debug("embedding failed on %s", task.path, exc_info=True)
        return task.path, None, f"{type(exc).__name__}: {exc}"


def embedding_failed(task: EmbedTask, failure: Failure) -> tuple[str, None, str]:
    """The result of a photo whose worker was stopped on it (over the decode time limit) or died on it."""
    return task.path, None, str(failure)


def _cache_key(row: dict) -> tuple:
    """Content, box, model and jitters: not the backend, whose descriptors serve the other's."""
    made_by = parse_embed_key(row["embed_key"])
    return row["sha256"], tuple(row["box"]), made_by["model"], made_by["num_jitters"]


def embed_faces(data_dir: str | Path, config: Config = Config(), workers: Engine | None = None) -> EmbedSummary:
    """Run the embed stage on the accepted rows of ``filter.parquet``; writes ``embeddings.parquet``.
    ``workers``: a pool to use (default: one of ``config.runtime.workers`` for this stage)."""
    data = DataDir(data_dir)
    with data.locked("embed"):
        return _embed(data, config, workers)


def _embed(data: DataDir, config: Config, workers: Engine | None) -> EmbedSummary:
    accepted = [row for row in data.read("filter").to_pylist() if row["status"] == "accepted"]
    backend = descriptor_backend(config.runtime.models_dir, config.runtime.descriptor_backend)
    key = embed_key(config.runtime.models_dir, config.embed.num_jitters, backend)
    checkpoint = Checkpoint(data, "embeddings")
    cache = {_cache_key(row): row for row in checkpoint.resume()}

    rows: list[dict | None] = []
    todo: list[EmbedTask] = []
    position: dict[str, int] = {}
    for row in accepted:
        out = {"path": row["path"], "alias": row["alias"], "sha256": row["sha256"], "box": row["box"],
               "embed_key": key}
        cached = cache.get(_cache_key(out))
        if cached:
            rows.append(out | {"embed_key": cached["embed_key"], "embedding": cached["embedding"]})
            continue
        position[row["path"]] = len(rows)
        rows.append(None)
        landmarks = tuple(zip(row["landmarks"][0::2], row["landmarks"][1::2]))
        todo.append(EmbedTask(row["path"], tuple(row["box"]), landmarks, config.embed.num_jitters,
                              config.image, config.runtime.models_dir, (row["width"], row["height"]), backend))

    log.info("embed: %d faces, %d cached, %d to compute", len(accepted), len(accepted) - len(todo), len(todo))
    failed = 0
    nodes: dict[str, int] = {}
    if todo:
        checkpoint.plan(len(todo))
        by_path = {row["path"]: row for row in accepted}
        with model_workers(config.runtime, shared=workers) as pool:
            for path, embedding, error in pool.map(embed_face, todo, desc="embed", failed=embedding_failed):
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
    data.write("embeddings", final)
    checkpoint.clear()
    return EmbedSummary(faces=len(final), computed=len(todo) - failed, failed=failed,
                        people=len({row["alias"] for row in final}), nodes=nodes)
