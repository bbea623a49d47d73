"""Stage 4, calibrate: how far a stranger's best match usually is, so a distance becomes a percent.

For (a sample of) the kept gallery photos, the distance to the nearest indexed vector of a *different*
person is the distance an outsider gets to their best match; its mean and standard deviation define the
similarity.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import LookalikeError
from ..gallery.search import ExactIndex
from ..gallery.similarity import Calibration, calibration_from_distances
from ..io.artifacts import DataDir

log = logging.getLogger(__name__)

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def sample_ids(size: int, sample: int, seed: int = 0) -> np.ndarray:
    """``sample`` distinct row ids out of ``size`` (all of them when the gallery is small), sorted."""
    if size <= sample:
        return np.arange(size)
    return np.sort(np.random.default_rng(seed).choice(size, sample, replace=False))


def calibrate(data_dir: str | Path, config: Config = Config()) -> Calibration:
    """Run the calibrate stage on the kept photos and ``gallery.parquet``; writes ``calibration.json``."""
    data = DataDir(data_dir)
    with data.locked("calibrate"):
        rows, vectors = data.vectors("gallery")
        photo_rows, photo_vectors = data.vectors("embeddings")
        kept = {row["path"] for row in data.read("identities").to_pylist() if row["status"] == "kept"}
        photo_ids = np.array([i for i, row in enumerate(photo_rows) if row["path"] in kept], dtype=np.int64)
        aliases = sorted({row["alias"] for row in rows})
        if len(aliases) < 2:
            raise LookalikeError(f"calibration needs faces of at least 2 people; the gallery has {len(aliases)}")
        code = {alias: number for number, alias in enumerate(aliases)}
        labels = np.array([code[row["alias"]] for row in rows])
        ids = photo_ids[sample_ids(len(photo_ids), config.calibrate.calibration_sample)]
        photo_labels = np.array([code[photo_rows[i]["alias"]] for i in ids])
        distances = ExactIndex(vectors).nearest_other(photo_vectors[ids], photo_labels, labels)
        try:
            calibration = calibration_from_distances(distances, config.calibrate.min_similarity)
        except ValueError as exc:
            raise LookalikeError(f"cannot calibrate: {exc}") from None
        data.write("calibration", {
            "mean": calibration.mean, "std": calibration.std, "count": calibration.count,
            "min_similarity": calibration.min_similarity, "gallery_size": len(rows), "people": len(aliases),
            "quantiles": {f"{q:.2f}": float(v) for q, v in zip(QUANTILES, np.quantile(distances, QUANTILES))},
        })
    return calibration
