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


def face_problem(eyes: float, tilt: float, min_eye_distance: float, max_tilt: float) -> str | None:
    """Why a face is not usable: ``small_face`` (eye centres ``eyes`` pixels apart, closer than
    ``min_eye_distance``), ``tilted`` (eye line ``tilt`` degrees off level, more than ``max_tilt``), or None."""
    if eyes < min_eye_distance:
        return "small_face"
    if abs(tilt) > max_tilt:
        return "tilted"
    return None


def shrink_factor(width: int, height: int, max_side: int) -> float:
    """The factor that brings the longer side down to ``max_side`` (1.0 when it is not longer, or no limit)."""
    longer = max(width, height)
    return max_side / longer if max_side and longer > max_side else 1.0


def pixels_factor(width: int, height: int, pixels: int) -> float:
    """The factor that resizes a ``width`` x ``height`` image to about ``pixels`` pixels (up or down)."""
    return math.sqrt(pixels / (width * height))


def enlarging_factor(width: int, height: int, pixels: int, searched: float) -> float:
    """The factor that enlarges a ``width`` x ``height`` image to ``pixels`` pixels, or 0.0 when that would search
    no smaller faces than a look at scale ``searched`` (the scale of the copy a detector already looked at)."""
    factor = pixels_factor(width, height, pixels)
    return factor if factor > searched else 0.0
