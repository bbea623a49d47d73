"""Stage 5, index: the nearest-neighbour search over the gallery descriptors, published with the gallery.

The backend (exact numpy search up to ``exact_max_size`` vectors, nmslib HNSW above) is chosen here; the
index, the gallery, the names and the calibration then become the current generation in one step
(``generations.py``), which is what queries read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, IndexConfig
from ..errors import LookalikeError
from ..face.model_files import parse_embed_key
from ..gallery.generations import publish, staging_folder
from ..gallery.search import HnswIndex
from ..io.artifacts import DataDir
from ..runtime.pool import resolve_workers

log = logging.getLogger(__name__)

HNSW_FILE = "hnsw.bin"


@dataclass(frozen=True)
class IndexSummary:
    backend: str
    vectors: int
    seconds: float
    generation: str


def choose_backend(config: IndexConfig, size: int) -> str:
    """The backend for a gallery of ``size`` vectors."""
    if config.backend != "auto":
        return config.backend
    return "exact" if size <= config.exact_max_size else "hnsw"


def build_index(data_dir: str | Path, config: Config = Config()) -> IndexSummary:
    """Run the index stage on ``gallery.parquet`` and ``calibration.json``, and publish them with the index as
    the data directory's current generation."""
    data = DataDir(data_dir)
    with data.locked("index"):
        rows, vectors = data.vectors("gallery")
        data.read("calibration")  # fresh for this gallery, or a one-line error
        data.read("people", fresh=False)
        if not len(rows):
            raise LookalikeError("the gallery has no faces to index: check `lookalike filter`'s rejections")
        parse_embed_key(rows[0]["embed_key"])
        backend = choose_backend(config.index, len(rows))
        started = time.perf_counter()
        folder = staging_folder(data)
        meta = {"backend": backend, "size": len(rows), "dimensions": int(vectors.shape[1]), "metric": "l2",
                "embed_key": rows[0]["embed_key"], "file": None,
                "hnsw": {"M": config.index.hnsw_m, "efConstruction": config.index.hnsw_ef_construction,
                         "efSearch": config.index.hnsw_ef_search}}
        if backend == "hnsw":
            settings = config.index
            HnswIndex.build(vectors, settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search,
                            resolve_workers(config.runtime.workers)).save(folder / HNSW_FILE)
            meta["file"] = HNSW_FILE
        seconds = time.perf_counter() - started
        generation = publish(data, folder, meta)
    return IndexSummary(backend=backend, vectors=len(rows), seconds=seconds, generation=generation)
