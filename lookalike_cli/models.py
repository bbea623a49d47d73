"""dlib's face models: HOG detector, 5-point landmarks and the ResNet 128-d descriptor.

The model files come from the ``face_recognition_models`` package, or from a folder the user names;
nothing is ever downloaded. Loading takes about half a second, so every process loads them once.
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from .config import RuntimeConfig
from .errors import LookalikeError
from .geometry import box_area, eye_distance, head_tilt, scale_box

LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"

if TYPE_CHECKING:
    from .parallel import WorkerPool


def models_folder(models_dir: str = "") -> Path:
    """The folder holding dlib's model files: ``models_dir``, or the face_recognition_models package's."""
    if models_dir:
        folder = Path(models_dir)
    else:
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise LookalikeError("the face_recognition_models package is not installed "
                                 "(pip install face_recognition_models), and no --models-dir was given")
        folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    missing = [name for name in (LANDMARKS_FILE, DESCRIPTOR_FILE) if not (folder / name).is_file()]
    if missing:
        raise LookalikeError(f"models folder {folder} lacks {', '.join(missing)}")
    return folder


def model_id(models_dir: str = "") -> str:
    """Names the descriptor model (file name and size): descriptors from different models don't mix."""
    path = models_folder(models_dir) / DESCRIPTOR_FILE
    return f"{path.stem}:{path.stat().st_size}"


def dlib_build_info() -> dict:
    """Which dlib this process runs: its version, and whether it was built with BLAS and with AVX."""
    import dlib

    return {"version": dlib.__version__, "blas": bool(dlib.DLIB_USE_BLAS), "avx": bool(dlib.USE_AVX_INSTRUCTIONS)}


@dataclass(frozen=True)
class Face:
    """A detected face: box (left, top, right, bottom), HOG score, 5 landmarks as (x, y)."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: tuple[tuple[float, float], ...]

    @property
    def eye_distance(self) -> float:
        return eye_distance(self.landmarks)

    @property
    def tilt(self) -> float:
        return head_tilt(self.landmarks)


class FaceModels:
    """The three dlib models, loaded once."""

    def __init__(self, models_dir: str = ""):
        import dlib

        folder = models_folder(models_dir)
        self._dlib = dlib
        try:
            self.detector = dlib.get_frontal_face_detector()
            self.shape_predictor = dlib.shape_predictor(str(folder / LANDMARKS_FILE))
            self.encoder = dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_FILE))
        except RuntimeError as exc:
            raise LookalikeError(f"cannot load dlib models from {folder}: {exc}") from None
        self.model_id = model_id(models_dir)

    def detect(self, image: np.ndarray, upsample: int = 1, min_score: float = 0.0,
               max_size: int = 0) -> list[Face]:
        """Faces in an RGB image, largest first. With ``max_size``, detection runs on a shrunk copy of a
        larger image and the landmarks on the full one."""
        height, width = image.shape[:2]
        factor = 1.0
        searched = image
        if max_size and max(height, width) > max_size:
            from PIL import Image

            factor = max_size / max(height, width)
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            searched = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        rects, scores, _ = self.detector.run(searched, upsample, min(min_score, 0.0))
        faces = []
        for rect, score in zip(rects, scores):
            if score < min_score:
                continue
            box = scale_box((rect.left(), rect.top(), rect.right(), rect.bottom()), factor)
            faces.append(Face(box=box, score=float(score), landmarks=self.landmarks(image, box)))
        return sorted(faces, key=lambda face: box_area(face.box), reverse=True)

    def landmarks(self, image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[tuple[float, float], ...]:
        shape = self.shape_predictor(image, self._dlib.rectangle(*box))
        return tuple((float(p.x), float(p.y)) for p in shape.parts())

    def descriptor(self, image: np.ndarray, face: Face, num_jitters: int = 1) -> np.ndarray:
        """The 128-d descriptor of a face (mean over ``num_jitters`` jittered copies when > 1)."""
        dlib = self._dlib
        shape = dlib.full_object_detection(dlib.rectangle(*face.box),
                                           [dlib.point(int(x), int(y)) for x, y in face.landmarks])
        values = self.encoder.compute_face_descriptor(image, shape, num_jitters)
        return np.asarray(values, dtype=np.float32)


_process_models: dict[str, FaceModels] = {}


def process_models(models_dir: str = "") -> FaceModels:
    """This process's FaceModels, loaded on first use (for worker processes and long-lived servers)."""
    if models_dir not in _process_models:
        _process_models[models_dir] = FaceModels(models_dir)
    return _process_models[models_dir]


@contextmanager
def model_workers(runtime: RuntimeConfig, shared: WorkerPool | None = None) -> Iterator[WorkerPool]:
    """``runtime.workers`` workers for dlib work on ``runtime.executor``, each loading the models once, closed
    on exit; or ``shared``, a pool the caller opened (``build`` shares one across stages), used as is and left
    open."""
    if shared is not None:
        yield shared
        return
    from .parallel import worker_pool

    with worker_pool(runtime, process_models, (runtime.models_dir,)) as pool:
        yield pool
