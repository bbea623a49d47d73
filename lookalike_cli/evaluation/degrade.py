"""Probe degradations for ``lookalike eval --degrade``: what forwarded thumbnails, screenshots and bad light do
to a photo, as small pure functions of an RGB array.

A degradation is written as steps applied left to right, ``shrink:160,jpeg:35``:

- ``shrink:N``: the longer side down to N pixels (never enlarged);
- ``jpeg:Q``: saved and read back as a JPEG of quality Q;
- ``blur:R``: Gaussian blur of radius R pixels;
- ``rotate:D``: turned D degrees counter-clockwise on a larger black canvas (nothing is cut off);
- ``dark:F``: every pixel value times F (0.3: a dim, underexposed photo);
- ``gray``: grayscale (kept as three equal channels).
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np

from ..errors import LookalikeError
from ..imaging.geometry import shrink_factor
from ..imaging.tones import scaled_image

Step = tuple[str, float]
MAX_SPEC_CHARS = 200  # a spec is a few steps


def shrink(image: np.ndarray, longer_side: float) -> np.ndarray:
    height, width = image.shape[:2]
    factor = shrink_factor(width, height, int(longer_side))
    return scaled_image(image, factor) if factor < 1 else image


def jpeg(image: np.ndarray, quality: float) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=int(quality))
    return np.asarray(Image.open(buffer).convert("RGB"))


def blur(image: np.ndarray, radius: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).rotate(degrees, Image.BICUBIC, expand=True))


def dark(image: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(np.rint(image.astype(np.float32) * factor), 0, 255).astype(np.uint8)


def gray(image: np.ndarray, _: float = 0.0) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).convert("L").convert("RGB"))


# name: (function, lowest value, highest value); gray takes no value
STEPS: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], float, float]] = {
    "shrink": (shrink, 16, 100_000), "jpeg": (jpeg, 1, 95), "blur": (blur, 0, 100), "rotate": (rotate, -360, 360),
    "dark": (dark, 0, 1), "gray": (gray, 0, 0),
}


def parse_degradation(spec: str) -> tuple[Step, ...]:
    """``shrink:160,jpeg:35`` as ((name, value), ...); a bad spec is a LookalikeError that names it."""
    steps = []
    if len(spec) > MAX_SPEC_CHARS:
        raise LookalikeError(f"degradation {spec[:40]!r}...: longer than {MAX_SPEC_CHARS} characters")
    for part in spec.split(","):
        name, _, value = part.strip().partition(":")
        if name not in STEPS:
            raise LookalikeError(f"degradation {spec!r}: unknown step {name!r} (known: {', '.join(STEPS)})")
        low, high = STEPS[name][1:]
        if name == "gray":
            if value:
                raise LookalikeError(f"degradation {spec!r}: gray takes no value")
            steps.append((name, 0.0))
            continue
        try:
            number = float(value)
        except ValueError:
            raise LookalikeError(f"degradation {spec!r}: {name} needs a number, as in {name}:{high:g}") from None
        if not low <= number <= high:
            raise LookalikeError(f"degradation {spec!r}: {name} must be between {low:g} and {high:g}")
        steps.append((name, number))
    return tuple(steps)


def degrade(image: np.ndarray, steps: tuple[Step, ...]) -> np.ndarray:
    """An RGB image with the steps applied in order."""
    for name, value in steps:
        image = STEPS[name][0](image, value)
    return image
