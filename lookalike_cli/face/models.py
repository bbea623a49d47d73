"""dlib's face models, loaded once per process: the HOG detector, 5-point landmarks, the face chips and their
128-d descriptors (by the backend ``descriptors`` picks), and the detection chain, whose last look is the CNN
detector (loaded when a photo first needs it).

The model files come from the ``face_recognition_models`` package, or from a folder the user names
(``model_files``); nothing is ever downloaded. Loading takes about half a second, so every process loads them once.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..config import DetectConfig, RuntimeConfig
from ..imaging.geometry import (
    box_area,
    enlarging_factor,
    eye_distance,
    face_problem,
    head_tilt,
    pixels_factor,
    scale_box,
    shrink_factor,
)
from ..imaging.tones import Tones, dim_tones, scaled_image
from .descriptors import descriptor_backend, dlib_descriptors, jittered_chips, load_dlib_encoder, numpy_network
from .hog import HogPyramid, first_level_for
from .model_files import CNN_DETECTOR_FILE, LANDMARKS_FILE, model_id, models_error, models_folder

Box = tuple[int, int, int, int]  # left, top, right, bottom
CNN_MIN_SIDE = 40  # pixels: the CNN detector finds no smaller face, and fails on a copy a few pixels thin
DETECTORS = ("hog-coarse", "hog", "hog-stretched", "hog-upsampled", "cnn")  # the chain's looks (Face.detector)
FALLBACK_LOOKS = DETECTORS[2:]  # the looks after HOG's first one (settled by its coarse part, or by the fine one)
LANDMARK_MARGIN = 0.5  # around a face box, in box sizes: what the landmark model may read of the photo
CHIP_PADDING = 0.25  # around the face in its chip: dlib's compute_face_descriptor default

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..runtime.engines import Engine
    from .resnet import ResNet


@dataclass(frozen=True)
class Face:
    """A detected face: box (left, top, right, bottom), the detector's score, 5 landmarks as (x, y), and which look
    of the detection chain found it (DETECTORS): HOG's first look (``hog-coarse`` when its coarse part settled
    the photo, ``hog`` when the fine part looked), or the fallback's ``hog-stretched``, ``hog-upsampled`` or
    ``cnn``."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: tuple[tuple[float, float], ...]
    detector: str = "hog"

    @property
    def eye_distance(self) -> float:
        return eye_distance(self.landmarks)

    @property
    def tilt(self) -> float:
        return head_tilt(self.landmarks)


class FaceModels:
    """dlib's detector and landmarks, loaded once; the descriptor network of each backend, loaded on first use."""

    def __init__(self, models_dir: str = ""):
        import dlib

        self.folder = models_folder(models_dir)
        self.models_dir = models_dir
        self._dlib = dlib
        try:
            self.detector = dlib.get_frontal_face_detector()
            self.shape_predictor = dlib.shape_predictor(str(self.folder / LANDMARKS_FILE))
        except RuntimeError as exc:
            raise models_error(self.folder, exc) from None
        self.model_id = model_id(models_dir)
        self._encoder = None
        self._network: ResNet | None = None
        self._cnn = None

    @property
    def encoder(self):
        """dlib's descriptor network."""
        if self._encoder is None:
            self._encoder = load_dlib_encoder(self.folder)
        return self._encoder

    @property
    def cnn_detector(self):
        """dlib's CNN (MMOD) face detector, loaded on first use."""
        if self._cnn is None:
            folder = models_folder(self.models_dir, CNN_DETECTOR_FILE)
            try:
                self._cnn = self._dlib.cnn_face_detection_model_v1(str(folder / CNN_DETECTOR_FILE))
            except RuntimeError as exc:
                raise models_error(folder, exc) from None
        return self._cnn

    @property
    def cnn_loaded(self) -> bool:
        """Whether the CNN detector has been loaded (it is, once a photo has needed it)."""
        return self._cnn is not None

    @property
    def network(self) -> ResNet:
        """The same network run by numpy (see numpy_network)."""
        if self._network is None:
            self._network = numpy_network(self.models_dir)
        return self._network

    def first_look(self, image: np.ndarray, settings: DetectConfig) -> tuple[list[tuple[Box, float]], str]:
        """HOG's first look at an RGB image, coarse to fine: the boxes and scores of its faces, the largest first,
        and the look that settled them (``hog-coarse`` or ``hog``).

        The detector scans a pyramid of copies of the image, the first (largest) of which find only small faces
        and cost most of the time (see hog.py). The coarse look scans from the level on which a face
        ``coarse_face_share`` of the image's shorter side is found; when it finds faces, and every one of them
        on a level above its first (a face whose box no smaller detection could win), the photo is settled:
        those are the faces and boxes the fine look would find, no smaller face is looked for beside them.
        Otherwise the fine look scans the whole pyramid, as ``find_faces`` does."""
        height, width = image.shape[:2]
        factor = shrink_factor(width, height, settings.detect_max_size)
        searched = scaled_image(image, factor) if factor != 1 else image
        pyramid = HogPyramid(self._dlib, self.detector, searched, settings.upsample)
        threshold = min(settings.min_detection_score, 0.0)
        first = first_level_for(min(searched.shape[:2]) * settings.coarse_face_share, settings.upsample)
        found = pyramid.detect(first, threshold) if first and pyramid.levels_above(first) else None
        look = "hog-coarse"
        if not (found and all(level > first for _, _, level in found)):
            found, look = pyramid.detect(0, threshold), "hog"
        return _largest_first([(scale_box(box, factor), score) for box, score, _ in found or ()
                               if score >= settings.min_detection_score]), look

    def find_faces(self, image: np.ndarray, upsample: int = 1, min_score: float = 0.0, max_size: int = 0,
                   tones: Tones | None = None) -> list[tuple[Box, float]]:
        """Boxes and HOG scores of the faces in an RGB image, largest first. With ``max_size``, detection runs
        on a shrunk copy of a larger image (the boxes are of the full one); with ``tones``, on a copy seen through
        that table of levels (see tones.dim_tones)."""
        height, width = image.shape[:2]
        return self._hog_boxes(image, shrink_factor(width, height, max_size), upsample, min_score, tones)

    def _hog_boxes(self, image: np.ndarray, factor: float, upsample: int, min_score: float,
                   tones: Tones | None = None) -> list[tuple[Box, float]]:
        """HOG's boxes and scores on a copy of ``image`` resized by ``factor`` (and seen through ``tones``), in
        ``image``'s pixels, largest first."""
        searched = _looked_at(scaled_image(image, factor) if factor != 1 else image, tones)
        rects, scores, _ = self.detector.run(searched, upsample, min(min_score, 0.0))
        return _largest_first([(scale_box((rect.left(), rect.top(), rect.right(), rect.bottom()), factor),
                                float(score)) for rect, score in zip(rects, scores) if score >= min_score])

    def _cnn_boxes(self, image: np.ndarray, factor: float, min_score: float,
                   tones: Tones | None = None) -> list[tuple[Box, float]]:
        """The CNN detector's boxes and scores on a copy of ``image`` resized by ``factor`` (and seen through
        ``tones``), largest first."""
        found = self.cnn_detector(_looked_at(scaled_image(image, factor), tones), 0)
        return _largest_first([(scale_box((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), factor),
                                float(d.confidence)) for d in found if d.confidence >= min_score])

    def stretched_faces(self, image: np.ndarray, settings: DetectConfig, tones: Tones) -> list[Face]:
        """The fallback's look at a dim or flat photo: HOG as the first look did, on the photo seen through
        ``tones`` (its levels stretched); faces that pass the fallback's checks."""
        found = self.find_faces(image, settings.upsample, settings.min_detection_score, settings.detect_max_size,
                                tones)
        return self._checked(image, found, "hog-stretched", settings, tones)

    def upsampled_faces(self, image: np.ndarray, settings: DetectConfig, tones: Tones | None = None) -> list[Face]:
        """The fallback's HOG look: on a copy enlarged to ``fallback_hog_pixels``, when that searches smaller
        faces than the first look did (none otherwise); faces that pass the fallback's checks."""
        height, width = image.shape[:2]
        first = shrink_factor(width, height, settings.detect_max_size) * 2 ** settings.upsample
        factor = enlarging_factor(width, height, settings.fallback_hog_pixels, first)
        found = self._hog_boxes(image, factor, 0, settings.min_detection_score, tones) if factor else []
        return self._checked(image, found, "hog-upsampled", settings, tones)

    def cnn_faces(self, image: np.ndarray, settings: DetectConfig, tones: Tones | None = None) -> list[Face]:
        """The fallback's CNN look: on a copy resized to ``cnn_pixels``; faces scoring ``cnn_min_score`` or more
        that pass the fallback's checks."""
        height, width = image.shape[:2]
        factor = pixels_factor(width, height, settings.cnn_pixels)
        if min(width, height) * factor < CNN_MIN_SIDE:
            return []
        return self._checked(image, self._cnn_boxes(image, factor, settings.cnn_min_score, tones), "cnn", settings,
                             tones)

    def fallback_faces(self, image: np.ndarray, settings: DetectConfig) -> list[Face]:
        """Faces of an image in which HOG's first look found none, from the first of these looks that finds
        some: on a dim or flat photo (tones.dim_tones), HOG again with its levels stretched; the enlarged HOG
        look; the CNN's. For a dim photo the last two look through the stretch too, as do the landmarks (only
        the copies each look makes and the faces' surroundings are stretched, never the whole photo)."""
        tones = dim_tones(image, settings.fallback_stretch_span)
        if tones is not None:
            faces = self.stretched_faces(image, settings, tones)
            if faces:
                return faces
        return self.upsampled_faces(image, settings, tones) or self.cnn_faces(image, settings, tones)

    def _checked(self, image: np.ndarray, found: list[tuple[Box, float]], detector: str,
                 settings: DetectConfig, tones: Tones | None = None) -> list[Face]:
        """The fallback's faces with their landmarks, those that pass its eye-distance and tilt checks."""
        faces = [self.face(image, box, score, detector, tones) for box, score in found]
        return [face for face in faces if face_problem(face.eye_distance, face.tilt,
                                                       settings.fallback_min_eye_distance,
                                                       settings.fallback_max_tilt) is None]

    def detect(self, image: np.ndarray, upsample: int = 1, min_score: float = 0.0,
               max_size: int = 0) -> list[Face]:
        """Faces in an RGB image, largest first, with their landmarks (see find_faces)."""
        return [self.face(image, box, score) for box, score in self.find_faces(image, upsample, min_score, max_size)]

    def face(self, image: np.ndarray, box: Box, score: float, detector: str = "hog",
             tones: Tones | None = None) -> Face:
        """The face in ``box`` of an RGB image, with its landmarks (found through ``tones``, when given)."""
        return Face(box=box, score=score, landmarks=self.landmarks(image, box, tones), detector=detector)

    def landmarks(self, image: np.ndarray, box: Box, tones: Tones | None = None) -> tuple[tuple[float, float], ...]:
        """The 5 landmarks of the face in ``box``; with ``tones``, found on the face's surroundings (the box and
        LANDMARK_MARGIN of its size around it) seen through that table."""
        if tones is None:
            left, top, region = 0, 0, image
        else:
            height, width = image.shape[:2]
            margin = round(LANDMARK_MARGIN * max(box[2] - box[0], box[3] - box[1]))
            left, top = max(0, box[0] - margin), max(0, box[1] - margin)
            right, bottom = min(width, box[2] + margin + 1), min(height, box[3] + margin + 1)
            region = _looked_at(image[top:bottom, left:right], tones)
        shape = self.shape_predictor(region, self._dlib.rectangle(box[0] - left, box[1] - top, box[2] - left,
                                                                  box[3] - top))
        return tuple((float(p.x + left), float(p.y + top)) for p in shape.parts())

    def dlib_shape(self, face: Face):
        """The face as dlib's functions take it (box and landmarks): a ``dlib.full_object_detection``."""
        dlib = self._dlib
        return dlib.full_object_detection(dlib.rectangle(*face.box),
                                          [dlib.point(int(x), int(y)) for x, y in face.landmarks])

    def chip(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The face's 150x150 aligned chip, as dlib's descriptor extracts it."""
        from .resnet import CHIP_SIZE

        return self._dlib.get_face_chip(image, self.dlib_shape(face), size=CHIP_SIZE, padding=CHIP_PADDING)

    def descriptor(self, image: np.ndarray, face: Face, num_jitters: int = 1, backend: str = "auto") -> np.ndarray:
        """The 128-d descriptor of a face by ``backend`` (see descriptor_backend): of its chip, or the mean over
        ``num_jitters`` jittered copies of it (when > 1), run as one batch of the face's own: the same face and
        settings give the same bits wherever and whenever it is computed on the same BLAS kernels."""
        chip = self.chip(image, face)
        chips = jittered_chips(chip, num_jitters) if num_jitters > 1 else chip[None]
        return self.chip_descriptors(chips, backend).mean(axis=0)

    def chip_descriptors(self, chips: np.ndarray, backend: str = "auto") -> np.ndarray:
        """(N, 128) float32 descriptors of aligned chips, (N, 150, 150, 3) uint8, by ``backend``."""
        if descriptor_backend(self.models_dir, backend) == "numpy":
            return self.network.descriptors(chips)
        return dlib_descriptors(self.encoder, chips)


def _looked_at(image: np.ndarray, tones: Tones | None) -> np.ndarray:
    """An RGB image seen through a table of levels (a new array), or as it is."""
    return image if tones is None else tones[image]


def _largest_first(found: list[tuple[Box, float]]) -> list[tuple[Box, float]]:
    """(box, score) pairs, the largest box first."""
    return sorted(found, key=lambda face: box_area(face[0]), reverse=True)


_process_models: dict[str, FaceModels] = {}


def process_models(models_dir: str = "") -> FaceModels:
    """This process's FaceModels, loaded on first use (for worker processes and long-lived servers)."""
    if models_dir not in _process_models:
        _process_models[models_dir] = FaceModels(models_dir)
    return _process_models[models_dir]


@contextmanager
def model_workers(runtime: RuntimeConfig, shared: Engine | None = None) -> Iterator[Engine]:
    """``runtime.workers`` workers for dlib work on ``runtime.executor``, each loading the models once, closed
    on exit; or ``shared``, a pool the caller opened (``build`` shares one across stages), used as is and left
    open."""
    if shared is not None:
        yield shared
        return
    from ..runtime.engines import worker_pool

    with worker_pool(runtime, process_models, (runtime.models_dir,)) as pool:
        yield pool
