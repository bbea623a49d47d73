"""dlib's model files: where they are, what identifies them, and the key that says how descriptors were made."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import LookalikeError

LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"


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
    """The parts of an ``embed_key``: {"model": ..., "num_jitters": ..., "descriptor": ...}."""
    parts = dict(part.partition("=")[::2] for part in key.split(";"))
    if not parts.get("model") or not parts.get("num_jitters", "").isdigit() or not parts.get("descriptor"):
        raise LookalikeError(f"descriptor key {key[:80]!r} is damaged: rebuild the gallery")
    return parts


def cache_folder() -> Path:
    """Where lookalike keeps what it derives from the user's files: $XDG_CACHE_HOME/lookalike, or
    ~/.cache/lookalike."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lookalike"


def models_error(folder: Path, exc: RuntimeError) -> LookalikeError:
    """dlib's (multi-line) complaint about a model file, in one line."""
    return LookalikeError(f"cannot load dlib models from {folder}: {' '.join(str(exc).split())}")
