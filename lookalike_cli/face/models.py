"""dlib's face models: HOG detector, 5-point landmarks and the ResNet 128-d descriptor, and the CNN detector
of the detection fallback (loaded when a photo first needs it).

The model files come from the ``face_recognition_models`` package, or from a folder the user names;
nothing is ever downloaded. Loading takes about half a second, so every process loads them once.

Descriptors come from one of two backends that give the same numbers: dlib's own network, or the same network
run by numpy (``resnet``: several times faster than the PyPI dlib, which has no BLAS). The numpy one is
converted from the model file on first use and cached under ``cache_folder()`` by the file's SHA-256, and is
used only once it has matched dlib on the faces of ``GUARD_CHIPS`` (the equivalence guard, whose outcome is
cached beside it for the installed dlib and numpy).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..config import DetectConfig, RuntimeConfig
from ..errors import LookalikeError
from ..imaging.geometry import (box_area, enlarging_factor, eye_distance, face_problem, head_tilt, pixels_factor, scale_box,
                       shrink_factor)
from ..imaging.images import Tones, dim_tones, scaled_image

LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"
Box = tuple[int, int, int, int]  # left, top, right, bottom
CNN_MIN_SIDE = 40  # pixels: the CNN detector finds no smaller face, and fails on a copy a few pixels thin
DETECTORS = ("hog", "hog-stretched", "hog-upsampled", "cnn")  # the looks of the detection chain (Face.detector)
LANDMARK_MARGIN = 0.5  # around a face box, in box sizes: what the landmark model may read of the photo
CHIP_PADDING = 0.25  # around the face in its chip: dlib's compute_face_descriptor default
MAX_DESCRIPTOR_MODEL_BYTES = 64 << 20  # dlib's descriptor model has 22 MB: a larger file is not read
EQUIVALENCE_TOLERANCE = 1e-4  # largest L2 difference from dlib's descriptors the numpy backend may show
GUARD_CHIPS = Path(__file__).with_name("guard_chips.png")  # face chips side by side, each 150x150

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..runtime.engines import Engine
    from .resnet import ResNet


def models_folder(models_dir: str = "", *needed: str) -> Path:
    """The folder holding dlib's model files: ``models_dir``, or the face_recognition_models package's; it must
    hold the landmarks and descriptor models, and the ``needed`` files."""
    if models_dir:
        folder = Path(models_dir)
    else:
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise LookalikeError("the face_recognition_models package is not installed "
                                 "(pip install face_recognition_models), and no --models-dir was given")
        folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    missing = [name for name in (LANDMARKS_FILE, DESCRIPTOR_FILE, *needed) if not (folder / name).is_file()]
    if missing:
        raise LookalikeError(f"models folder {folder} lacks {', '.join(missing)}")
    return folder


def model_id(models_dir: str = "") -> str:
    """Names the descriptor model (file name and size): descriptors from different models don't mix."""
    path = models_folder(models_dir) / DESCRIPTOR_FILE
    return f"{path.stem}:{path.stat().st_size}"


def embed_key(models_dir: str, num_jitters: int, backend: str) -> str:
    """What made a descriptor (model, jitters, and the descriptor backend): stored with every descriptor, the cache
    key beside the image content and face box, and checked by queries against the models they use."""
    return f"model={model_id(models_dir)};num_jitters={num_jitters};descriptor={backend}"


def parse_embed_key(key: str) -> dict[str, str]:
    """The parts of an ``embed_key``: {"model": ..., "num_jitters": ..., "descriptor": ...} (no "descriptor" in
    keys made before there were two backends)."""
    parts = dict(part.partition("=")[::2] for part in key.split(";"))
    if not parts.get("model") or not parts.get("num_jitters", "").isdigit():
        raise LookalikeError(f"descriptor key {key[:80]!r} is damaged: rebuild the gallery")
    return parts


def dlib_build_info() -> dict:
    """Which dlib this process runs: its version, and whether it was built with BLAS and with AVX."""
    import dlib

    return {"version": dlib.__version__, "blas": bool(dlib.DLIB_USE_BLAS), "avx": bool(dlib.USE_AVX_INSTRUCTIONS)}


def cache_folder() -> Path:
    """Where lookalike keeps what it derives from the user's files: $XDG_CACHE_HOME/lookalike, or
    ~/.cache/lookalike."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lookalike"


def jittered_chips(chip: np.ndarray, count: int) -> np.ndarray:
    """``count`` jittered copies of a square chip, made as dlib's jitter_image makes them for its descriptor:
    the crop moved by up to 2 %, scaled to 97-100 %, turned by up to 3 degrees, mirrored half the time (no
    colour change). The random generator is seeded by the chip's pixels: a face gets the same copies in any
    process and any run."""
    import dlib

    rng = np.random.default_rng(np.frombuffer(hashlib.sha256(chip.tobytes()).digest(), dtype=np.uint32))
    size = chip.shape[0]
    side = size - 6  # dlib shrinks the chip's rectangle by 3 pixels on each side
    copies = np.empty((count, *chip.shape), dtype=np.uint8)
    for copy in copies:
        shift_x, shift_y = (math.floor(rng.uniform(-0.02, 0.02) * side + 0.5) for _ in range(2))
        box = int(side / rng.uniform(0.97, 0.99999))
        left, top = size // 2 + shift_x - box // 2, size // 2 + shift_y - box // 2
        crop = dlib.extract_image_chip(chip, dlib.chip_details(
            dlib.rectangle(left, top, left + box - 1, top + box - 1), dlib.chip_dims(size, size),
            math.radians(rng.uniform(-3, 3))))
        copy[:] = crop[:, ::-1] if rng.random() > 0.5 else crop
    return copies


def guard_chips() -> np.ndarray:
    """The faces of the equivalence guard as aligned chips, (N, 150, 150, 3) uint8."""
    from PIL import Image

    from .resnet import CHIP_SIZE

    with Image.open(GUARD_CHIPS) as image:
        strip = np.asarray(image.convert("RGB"))
    return np.stack(np.split(strip, strip.shape[1] // CHIP_SIZE, axis=1))


def dlib_descriptors(encoder, chips: np.ndarray) -> np.ndarray:
    """(N, 128) float32 descriptors of aligned chips by dlib's network, as one batch."""
    return np.asarray(encoder.compute_face_descriptor(list(chips), 0), dtype=np.float32)


def load_dlib_encoder(folder: Path):
    """dlib's descriptor network from the models folder."""
    import dlib

    try:
        return dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_FILE))
    except RuntimeError as exc:
        raise models_error(folder, exc) from None


def models_error(folder: Path, exc: RuntimeError) -> LookalikeError:
    """dlib's (multi-line) complaint about a model file, in one line."""
    return LookalikeError(f"cannot load dlib models from {folder}: {' '.join(str(exc).split())}")


def _converted_network(model: Path, path: Path) -> ResNet:
    """The numpy network of ``model``, from ``path`` (its cached conversion), or converted into it."""
    from ..files import write_bytes
    from .resnet import convert, converted_bytes, load_converted, read_dlib_network

    try:
        return load_converted(path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log.warning("converting %s again: %s", model, exc)
    write_bytes(path, converted_bytes(convert(read_dlib_network(model.read_bytes()))))
    return load_converted(path)


def _guard(network: ResNet, folder: Path, path: Path, setup: dict) -> dict:
    """The equivalence guard's outcome for ``setup`` (model, conversion, dlib build, numpy): read from
    ``path``, or measured (numpy's descriptors of GUARD_CHIPS against dlib's) and written there."""
    from ..files import write_json

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("setup") == setup:
            return record
    except (OSError, ValueError):
        pass
    chips = guard_chips()
    differences = np.linalg.norm(network.descriptors(chips) - dlib_descriptors(load_dlib_encoder(folder), chips),
                                 axis=1)
    record = {"setup": setup, "chips": len(chips), "max_l2": float(differences.max())}
    write_json(path, record)
    return record


def numpy_network(models_dir: str = "") -> ResNet:
    """dlib's descriptor network run by numpy: converted from the model file on first use, cached by the file's
    SHA-256, checked by the equivalence guard. A one-line LookalikeError when the file is not that network, or
    when the guard found descriptors that differ from dlib's."""
    from ..imaging.images import sha256_of
    from .resnet import CONVERTED_FORMAT

    folder = models_folder(models_dir)
    size = (folder / DESCRIPTOR_FILE).stat().st_size
    if size > MAX_DESCRIPTOR_MODEL_BYTES:
        raise LookalikeError(f"not dlib's face recognition network: {folder / DESCRIPTOR_FILE} has {size} bytes, "
                             f"more than {MAX_DESCRIPTOR_MODEL_BYTES}")
    sha256 = sha256_of(folder / DESCRIPTOR_FILE)
    cache = cache_folder() / "descriptor"
    network = _converted_network(folder / DESCRIPTOR_FILE, cache / f"{sha256}.npz")
    setup = {"model_sha256": sha256, "format": CONVERTED_FORMAT, "dlib": dlib_build_info(), "numpy": np.__version__}
    record = _guard(network, folder, cache / f"{sha256}.guard.json", setup)
    if record["max_l2"] > EQUIVALENCE_TOLERANCE:
        raise LookalikeError(f"the numpy descriptors differ from dlib's by up to {record['max_l2']:.1e} (L2) on "
                             f"the guard's faces, more than {EQUIVALENCE_TOLERANCE:g}")
    return network


@functools.lru_cache(maxsize=None)
def descriptor_backend(models_dir: str = "", requested: str = "auto") -> str:
    """The backend that computes this process's descriptors, "numpy" or "dlib": ``requested``; "auto" is numpy
    when its network converts and passes the equivalence guard, else dlib with a warning (a failure with
    "numpy" requested is an error)."""
    if requested == "dlib":
        return "dlib"
    try:
        numpy_network(models_dir)
    except LookalikeError as exc:
        if requested == "numpy":
            raise
        load_dlib_encoder(models_folder(models_dir))  # a file that dlib cannot read either is dlib's error
        log.warning("%s: descriptors are computed by dlib", exc)
        return "dlib"
    return "numpy"


@dataclass(frozen=True)
class Face:
    """A detected face: box (left, top, right, bottom), the detector's score, 5 landmarks as (x, y), and which look
    of the detection chain found it (DETECTORS): ``hog``, or the fallback's ``hog-stretched``, ``hog-upsampled``
    or ``cnn``."""

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
    def network(self) -> ResNet:
        """The same network run by numpy (see numpy_network)."""
        if self._network is None:
            self._network = numpy_network(self.models_dir)
        return self._network

    def find_faces(self, image: np.ndarray, upsample: int = 1, min_score: float = 0.0, max_size: int = 0,
                   tones: Tones | None = None) -> list[tuple[Box, float]]:
        """Boxes and HOG scores of the faces in an RGB image, largest first. With ``max_size``, detection runs
        on a shrunk copy of a larger image (the boxes are of the full one); with ``tones``, on a copy seen through
        that table of levels (see images.dim_tones)."""
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
        some: on a dim or flat photo (images.dim_tones), HOG again with its levels stretched; the enlarged HOG
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

    def chip(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The face's 150x150 aligned chip, as dlib's descriptor extracts it."""
        from .resnet import CHIP_SIZE

        dlib = self._dlib
        shape = dlib.full_object_detection(dlib.rectangle(*face.box),
                                           [dlib.point(int(x), int(y)) for x, y in face.landmarks])
        return dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)

    def descriptor(self, image: np.ndarray, face: Face, num_jitters: int = 1, backend: str = "auto") -> np.ndarray:
        """The 128-d descriptor of a face by ``backend`` (see descriptor_backend): of its chip, or the mean over
        ``num_jitters`` jittered copies of it (when > 1), run as one batch."""
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
