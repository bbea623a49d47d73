"""``build``: filter, embed, clean, calibrate and index in one go, each stage resuming where it stopped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..face.models import model_workers
from ..gallery.similarity import Calibration
from ..io.artifacts import DataDir
from .calibrate import calibrate
from .clean import CleanSummary, clean_identities
from .embed import EmbedSummary, embed_faces
from .filter import FilterSummary, filter_images
from .index import IndexSummary, build_index


@dataclass(frozen=True)
class BuildSummary:
    filter: FilterSummary
    embed: EmbedSummary
    clean: CleanSummary
    calibration: Calibration
    index: IndexSummary


def build(images_dir: str | Path, data_dir: str | Path, catalog: str | Path | None = None,
          config: Config = Config()) -> BuildSummary:
    """Build a searchable gallery in ``data_dir`` from the photos in ``images_dir``."""
    with DataDir(data_dir).locked("build"):
        with model_workers(config.runtime) as workers:  # one pool for both stages: the models load once
            filtered = filter_images(images_dir, data_dir, catalog, config, workers)
            embedded = embed_faces(data_dir, config, workers)
        cleaned = clean_identities(data_dir, config)
        calibration = calibrate(data_dir, config)
        indexed = build_index(data_dir, config)
    return BuildSummary(filtered, embedded, cleaned, calibration, indexed)
