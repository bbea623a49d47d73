"""Tones and sizes of decoded images: the tone stretch of a dim photo, and scaled copies."""

from __future__ import annotations

import numpy as np

TONE_CUTOFF = 0.01  # share of the darkest, and of the brightest, pixels that tone_range leaves out
TONE_SAMPLE = 250_000  # pixels of an image tone_range reads, at most
MIN_TONE_SPAN = 8  # levels: an image spanning fewer is one flat colour, with nothing to stretch
Tones = np.ndarray  # 256 uint8 levels, indexed by a pixel's level: ``tones[image]`` is the image seen through it


def tone_range(image: np.ndarray) -> tuple[int, int]:
    """The brightness levels (0-255) between which an RGB image's pixels lie, its darkest and brightest
    TONE_CUTOFF aside (read on every n-th pixel, at most TONE_SAMPLE of them)."""
    pixels = image.reshape(-1, 3)
    sample = pixels[::max(1, -(-len(pixels) // TONE_SAMPLE))]
    luma = sample @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    low, high = np.quantile(luma, [TONE_CUTOFF, 1 - TONE_CUTOFF])
    return round(low), round(high)


def stretching_tones(low: int, high: int) -> Tones:
    """The table that stretches levels ``low``..``high`` to 0..255 (levels outside clipped); applied to every
    channel alike, it keeps colours' hue."""
    levels = (np.arange(256, dtype=np.float32) - low) * (255 / max(high - low, 1))
    return np.clip(np.rint(levels), 0, 255).astype(np.uint8)


def dim_tones(image: np.ndarray, max_span: int) -> Tones | None:
    """For a dim or flat image, one whose tone_range spans fewer than ``max_span`` levels (and at least
    MIN_TONE_SPAN), the table that stretches that range to 0..255; else None."""
    low, high = tone_range(image)
    return stretching_tones(low, high) if MIN_TONE_SPAN <= high - low < max_span else None


def scaled_image(image: np.ndarray, factor: float) -> np.ndarray:
    """An RGB array resized by ``factor`` (bilinear; at least 1x1 pixel)."""
    from PIL import Image

    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
