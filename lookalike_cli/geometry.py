"""Geometry of a face from dlib's 5-point landmarks (pure functions, no dlib)."""

from __future__ import annotations

import math
from typing import Sequence

Point = tuple[float, float]


def eye_centers(landmarks: Sequence[Point]) -> tuple[Point, Point]:
    """Centres of the two eyes from the 5-point model: points 0-1 and 2-3 are the corners of each eye."""
    if len(landmarks) != 5:
        raise ValueError(f"expected 5 landmarks, got {len(landmarks)}")
    (ax, ay), (bx, by), (cx, cy), (dx, dy) = landmarks[:4]
    return ((ax + bx) / 2, (ay + by) / 2), ((cx + dx) / 2, (cy + dy) / 2)


def eye_distance(landmarks: Sequence[Point]) -> float:
    """Distance in pixels between the eye centres: how much detail the face has."""
    (x1, y1), (x2, y2) = eye_centers(landmarks)
    return math.hypot(x2 - x1, y2 - y1)


def head_tilt(landmarks: Sequence[Point]) -> float:
    """Roll of the eye line in degrees, in [-90, 90]: 0 for level eyes, whichever eye is listed first."""
    (x1, y1), (x2, y2) = eye_centers(landmarks)
    angle = math.degrees(math.atan2(y2 - y1, x2 - x1))
    if angle > 90:
        angle -= 180
    elif angle < -90:
        angle += 180
    return angle


def box_area(box: Sequence[float]) -> float:
    """Area of a (left, top, right, bottom) box; 0 for an empty one."""
    left, top, right, bottom = box
    return max(0.0, right - left) * max(0.0, bottom - top)


def scale_box(box: Sequence[float], factor: float) -> tuple[int, int, int, int]:
    """A (left, top, right, bottom) box measured on an image resized by ``factor``, back in original pixels."""
    return tuple(int(round(v / factor)) for v in box)  # type: ignore[return-value]
