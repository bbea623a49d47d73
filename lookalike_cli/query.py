"""Query: a photo in, for every face in it the nearest people of the gallery with a percent similarity."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .artifacts import DataDir
from .config import Config
from .errors import LookalikeError
from .generations import load_published
from .images import ImageRejected, read_image
from .models import Face, FaceModels, model_id, parse_embed_key
from .similarity import Calibration

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Match:
    alias: str
    name: str
    distance: float
    similarity: float
    image: str


@dataclass(frozen=True)
class FaceResult:
    box: list[int]
    matches: list[Match]


@dataclass(frozen=True)
class PhotoResult:
    photo: str
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict:
        result = asdict(self)
        if self.error is None:
            del result["error"]
        return result


class Lookalike:
    """A loaded gallery (index, calibration, names) and the face models: answers photos.

    >>> engine = Lookalike("data/demo/out")
    >>> engine.query_file("me.jpg").faces[0].matches[0].name
    """

    def __init__(self, data_dir: str | Path, config: Config = Config(), models: FaceModels | None = None):
        self.config = config
        published = load_published(DataDir(data_dir))
        self.generation = published.generation
        self.gallery = published.rows
        self.names = published.names
        self.meta = published.meta
        self.index = published.index
        self.calibration = Calibration(**{key: published.calibration[key]
                                          for key in ("mean", "std", "count", "min_similarity")})
        self.people = len({row["alias"] for row in self.gallery})
        expected = parse_embed_key(self.meta["embed_key"])["model"]
        if expected != model_id(config.runtime.models_dir):
            raise LookalikeError(f"the gallery in {data_dir} was built with model {expected}, but the models "
                                 f"in use are {model_id(config.runtime.models_dir)}: use the same --models-dir "
                                 "or rebuild")
        self._models = models

    @property
    def models(self) -> FaceModels:
        if self._models is None:
            self._models = FaceModels(self.config.runtime.models_dir)
        return self._models

    def nearest_people(self, descriptor: np.ndarray, top_k: int) -> list[Match]:
        """The ``top_k`` nearest distinct people (each by their closest vector), with their representative photo."""
        wanted = min(top_k, self.people)
        k = min(len(self.index), top_k * 4 + 4)
        while True:
            ids, distances = self.index.search(descriptor[None, :], k)
            best: dict[str, Match] = {}
            for row_id, distance in zip(ids[0], distances[0]):
                if row_id < 0:
                    continue
                row = self.gallery[row_id]
                if row["alias"] not in best:
                    best[row["alias"]] = Match(
                        alias=row["alias"], name=self.names.get(row["alias"], row["alias"]),
                        distance=float(distance), similarity=self.calibration.similarity(float(distance)),
                        image=row["image"])
            if len(best) >= wanted or k >= len(self.index):
                return list(best.values())[:wanted]
            k = min(len(self.index), k * 4)

    def describe_faces(self, image: np.ndarray) -> list[tuple[Face, np.ndarray]]:
        """Every face of an RGB image, left to right, with its query descriptor."""
        detect = self.config.detect
        faces = self.models.detect(image, detect.upsample, detect.min_detection_score, detect.detect_max_size)
        return [(face, self.models.descriptor(image, face, self.config.query.query_num_jitters,
                                              self.config.runtime.descriptor_backend))
                for face in sorted(faces, key=lambda f: (f.box[0], f.box[1]))]

    def query_image(self, image: np.ndarray, top_k: int | None = None) -> list[FaceResult]:
        """Every face of an RGB image with its nearest people."""
        top_k = top_k or self.config.query.top_k
        return [FaceResult(box=list(face.box), matches=self.nearest_people(descriptor, top_k))
                for face, descriptor in self.describe_faces(image)]

    def query_file(self, path: str | Path, top_k: int | None = None) -> PhotoResult:
        """A photo file's faces and matches; an unusable file gives a result with ``error`` set."""
        try:
            image = read_image(path, self.config.filter.max_image_pixels)
        except ImageRejected as exc:
            return PhotoResult(photo=str(path), error=f"{exc.reason}: {exc.detail}")
        return PhotoResult(photo=str(path), faces=self.query_image(image, top_k))
