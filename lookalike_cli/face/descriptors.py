"""Descriptor backends: dlib's own network, or the same network run by numpy (``resnet``: several times faster than
the PyPI dlib, which has no BLAS), which agree within ``EQUIVALENCE_TOLERANCE``. The numpy one is converted from
the model file on first use and cached under ``cache_folder()`` by the file's SHA-256, and is used only once it
has matched dlib on the faces of ``GUARD_CHIPS`` (the equivalence guard, whose outcome is cached beside it for the
installed dlib and numpy).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import LookalikeError
from .model_files import DESCRIPTOR_FILE, cache_folder, models_error, models_folder

if TYPE_CHECKING:
    from .resnet import ResNet

log = logging.getLogger(__name__)


MAX_DESCRIPTOR_MODEL_BYTES = 64 << 20  # dlib's descriptor model has 22 MB: a larger file is not read
EQUIVALENCE_TOLERANCE = 1e-4  # largest L2 difference from dlib's descriptors the numpy backend may show
GUARD_CHIPS = Path(__file__).with_name("guard_chips.png")  # face chips side by side, each 150x150


def dlib_build_info() -> dict:
    """Which dlib this process runs: its version, and whether it was built with BLAS and with AVX."""
    import dlib

    return {"version": dlib.__version__, "blas": bool(dlib.DLIB_USE_BLAS), "avx": bool(dlib.USE_AVX_INSTRUCTIONS)}


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
    from ..imaging.gallery import sha256_of
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
