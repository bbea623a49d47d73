"""Stage 3, calibrate: how far a stranger's best match usually is, so a distance becomes a percent.

For (a sample of) gallery photos, the distance to the nearest photo of a *different* person is the
distance an outsider gets to their best match; its mean and standard deviation define the similarity.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .artifacts import SCHEMA_VERSION, DataDir, read_json, write_json
from .config import Config
from .errors import LookalikeError
from .index import ExactIndex, embeddings_id, read_vectors
from .similarity import Calibration, calibration_from_distances

log = logging.getLogger(__name__)

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def sample_ids(size: int, sample: int, seed: int = 0) -> np.ndarray:
    """``sample`` distinct row ids out of ``size`` (all of them when the gallery is small), sorted."""
    if size <= sample:
        return np.arange(size)
    return np.sort(np.random.default_rng(seed).choice(size, sample, replace=False))


def calibrate(data_dir: str | Path, config: Config = Config()) -> Calibration:
    """Run the calibrate stage on ``embeddings.parquet``; writes ``calibration.json``."""
    data = DataDir(Path(data_dir))
    rows, vectors = read_vectors(data)
    aliases = [row["alias"] for row in rows]
    _, labels = np.unique(np.asarray(aliases, dtype=object), return_inverse=True)
    if len(set(aliases)) < 2:
        raise LookalikeError("calibration needs faces of at least 2 people; the gallery has "
                             f"{len(set(aliases))}")
    ids = sample_ids(len(rows), config.calibrate.calibration_sample)
    distances = ExactIndex(vectors).nearest_other(ids, labels)
    try:
        calibration = calibration_from_distances(distances, config.calibrate.min_similarity)
    except ValueError as exc:
        raise LookalikeError(f"cannot calibrate: {exc}") from None
    write_json(data.calibration, {
        "schema_version": SCHEMA_VERSION, "mean": calibration.mean, "std": calibration.std,
        "count": calibration.count, "min_similarity": calibration.min_similarity,
        "embeddings_id": embeddings_id(data.embeddings), "gallery_size": len(rows),
        "people": len(set(aliases)),
        "quantiles": {f"{q:.2f}": float(v) for q, v in zip(QUANTILES, np.quantile(distances, QUANTILES))},
    })
    return calibration


def load_calibration(data: DataDir) -> Calibration:
    """The calibration of a data directory, checked against its embeddings."""
    meta = read_json(data.require(data.calibration, "calibrate"), "calibrate")
    if meta.get("embeddings_id") != embeddings_id(data.require(data.embeddings, "embed")):
        raise LookalikeError(f"{data.calibration} is older than {data.embeddings}: run `lookalike calibrate` again")
    return Calibration(mean=meta["mean"], std=meta["std"], count=meta["count"],
                       min_similarity=meta["min_similarity"])
