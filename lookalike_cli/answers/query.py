"""Query: a photo in, for every face in it the nearest people of the gallery with a percent similarity."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from ..config import Config
from ..errors import LookalikeError
from ..face.model_files import CNN_DETECTOR_FILE, model_id, models_folder, parse_embed_key
from ..face.models import Face, FaceModels
from ..gallery.generations import load_published, published_names
from ..gallery.similarity import Calibration
from ..imaging.decode import ImageRejected, decode_image, read_photo_file
from ..imaging.geometry import scale_box
from ..io.artifacts import DataDir
from ..io.catalog import names_key
from ..language import SOURCE_LANGUAGE
from .results import FaceResult, Match, PhotoResult

log = logging.getLogger(__name__)


class Gate(Protocol):
    """Slots shared by processes (``runtime.pool.ProcessSlots``; a semaphore would do in one process)."""

    def acquire(self, block: bool = ...) -> bool: ...

    def release(self) -> None: ...


class Lookalike:
    """A loaded gallery (index, calibration, names) and the face models: answers photos.

    >>> engine = Lookalike("data/demo/out")
    >>> engine.query_file("me.jpg").faces[0].matches[0].name
    """

    def __init__(self, data_dir: str | Path, config: Config = Config(), models: FaceModels | None = None,
                 generation: str | None = None, fallback_gate: Gate | None = None):
        """Load the gallery published in ``data_dir`` (the generation named, or the current one). With
        ``fallback_gate`` (slots shared by processes), the detection fallback runs only while it can take a
        slot at once: the recognition pool keeps its costly look off some workers."""
        self.config = config
        self.fallback_gate = fallback_gate
        published = load_published(DataDir(data_dir), generation)
        self.generation = published.generation
        self.gallery = published.rows
        self.names = published.names
        self.local_names = published_names(DataDir(data_dir), self.generation)  # language -> alias -> name
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
        if config.detect.fallback:
            models_folder(config.runtime.models_dir, CNN_DETECTOR_FILE)  # a missing model is said now, once
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

    def _described(self, image: np.ndarray) -> tuple[list[tuple[Face, np.ndarray]], int, bool]:
        """The ``query.max_faces`` largest faces of an RGB image, left to right, each with its query
        descriptor; how many smaller faces were left out; and whether the fallback was busy. When HOG finds
        none, the detection fallback looks again (``detect.fallback``) if the gate lets it."""
        detect, query = self.config.detect, self.config.query
        boxes, look = self.models.first_look(image, detect)
        busy = False
        if boxes:
            kept = [self.models.face(image, box, score, look) for box, score in boxes[:query.max_faces]]
            count = len(boxes)
        else:
            found, busy = self._fallback(image) if detect.fallback else ([], False)
            kept, count = found[:query.max_faces], len(found)
        return ([(face, self.models.descriptor(image, face, query.query_num_jitters,
                                               self.config.runtime.descriptor_backend))
                 for face in sorted(kept, key=lambda f: (f.box[0], f.box[1]))], count - len(kept), busy)

    def _fallback(self, image: np.ndarray) -> tuple[list[Face], bool]:
        """The fallback's faces, and whether it was busy (the gate taken by other processes: no look)."""
        gate = self.fallback_gate
        if gate is not None and not gate.acquire(False):
            return [], True
        try:
            return self.models.fallback_faces(image, self.config.detect), False
        finally:
            if gate is not None:
                gate.release()

    def describe_faces(self, image: np.ndarray) -> list[tuple[Face, np.ndarray]]:
        """The faces of an RGB image (the ``query.max_faces`` largest), left to right, with their descriptors."""
        return self._described(image)[0]

    def answer_image(self, image: np.ndarray, photo: str = "", top_k: int | None = None,
                     scale: float = 1.0) -> PhotoResult:
        """The answer for an RGB image: its faces with their nearest people. ``scale``: the photo's size over
        the image's (see images.Decoded); the boxes are given in the photo's pixels."""
        top_k = top_k or self.config.query.top_k
        described, left_out, fallback_busy = self._described(image)
        faces = [FaceResult(box=list(scale_box(face.box, 1 / scale)), matches=self.nearest_people(descriptor, top_k),
                            detector=face.detector) for face, descriptor in described]
        return PhotoResult(photo=photo, faces=faces, faces_left_out=left_out, fallback_busy=fallback_busy)

    def query_image(self, image: np.ndarray, top_k: int | None = None) -> list[FaceResult]:
        """The faces of an RGB image (the ``query.max_faces`` largest) with their nearest people."""
        return self.answer_image(image, top_k=top_k).faces

    def answer_bytes(self, data: bytes, photo: str = "", picture: bool = False, top_k: int | None = None,
                     language: str = SOURCE_LANGUAGE) -> tuple[PhotoResult, bytes | None]:
        """A photo's bytes (a file's, an upload, standard input), decoded once: its faces and matches (or
        ``reason`` set), and with ``picture`` the answer drawn as a PNG in ``language`` (its words, and people's
        names as the catalog writes them in it; see render.render_png) when a face was found."""
        try:
            decoded = decode_image(data, self.config.image)
        except ImageRejected as exc:
            return PhotoResult.rejected(photo, exc), None
        result = self.answer_image(decoded.pixels, photo, top_k, decoded.scale)
        if not (picture and result.faces):
            return result, None
        from .render import render_png

        named = result.named(self.local_names.get(names_key(language), {}))
        return result, render_png(decoded.pixels, named.faces, decoded.scale, language)

    def answer_file(self, path: str | Path, picture: bool = False,
                    top_k: int | None = None) -> tuple[PhotoResult, bytes | None]:
        """``answer_bytes`` of a photo file; an unusable file gives a result with ``reason`` set."""
        try:
            data = read_photo_file(path, self.config.image)
        except ImageRejected as exc:
            return PhotoResult.rejected(str(path), exc), None
        return self.answer_bytes(data, str(path), picture, top_k)

    def query_file(self, path: str | Path, top_k: int | None = None) -> PhotoResult:
        """A photo file's faces and matches; an unusable file gives a result with ``reason`` set."""
        return self.answer_file(path, top_k=top_k)[0]
