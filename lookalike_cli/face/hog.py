"""dlib's HOG face detector run from any level of the image pyramid it scans, with the boxes a full run gives.

dlib's detector doubles the image ``upsample`` times and scans a pyramid of copies, each 5/6 the size of the last,
with a window of 80x80 pixels: a face is found on the level where it fits the window. The first levels are the
largest (they cost most of the time) and find only the smallest faces. ``HogPyramid`` makes the levels as dlib
makes them and runs the detector from any level on; a box found is mapped back to the image from its own level
and rounded once, as the full run maps it. So a face found from level ``k`` on has the box and score of the full
run's, unless a detection on a level below ``k`` overlaps it and scores higher, which a face found at least one
level above ``k`` never did on the photos measured (docs/faces.md#coarse-to-fine-detection).
"""

from __future__ import annotations

import math

import numpy as np

Box = tuple[int, int, int, int]  # left, top, right, bottom
LEVEL_SCALE = 1.2  # each level of the detector's pyramid is 5/6 the size of the one before (pyramid_down<6>)
SMALLEST_BOX = 73  # pixels: a box's side on the level that found it (a box cut by the level's edge: 81)
BOX_SIDES = frozenset({SMALLEST_BOX, 81})


def smallest_face(level: int, upsample: int) -> float:
    """The side, in pixels of the image, of the smallest box the detector finds from ``level`` on."""
    return SMALLEST_BOX * LEVEL_SCALE ** level / 2 ** upsample


def first_level_for(face_size: float, upsample: int) -> int:
    """The highest level from which the detector still finds every face at least ``face_size`` pixels wide."""
    if face_size <= smallest_face(0, upsample):
        return 0
    return int(math.log(face_size / smallest_face(0, upsample)) / math.log(LEVEL_SCALE))


class HogPyramid:
    """The image pyramid dlib's HOG ``detector`` scans for ``image`` (RGB) with ``upsample``, made level by level
    as it is asked for."""

    def __init__(self, dlib, detector, image: np.ndarray, upsample: int):
        self._dlib = dlib
        self._detector = detector
        self._down = dlib.pyramid_down(6)
        self._up = dlib.pyramid_down(2)  # dlib's pyramid_up doubles an image as the inverse of this pyramid
        self.upsample = upsample
        level = image
        for _ in range(upsample):
            height, width = level.shape[:2]
            doubled = self._up.rect_up(dlib.rectangle(0, 0, width - 1, height - 1))
            level = dlib.resize_image(level, doubled.bottom() + 1, doubled.right() + 1)
        self._levels = [level]

    def level(self, index: int) -> np.ndarray:
        """Level ``index`` of the pyramid (0: the image, doubled ``upsample`` times)."""
        while len(self._levels) <= index:
            self._levels.append(self._down(self._levels[-1]))
        return self._levels[index]

    def levels_above(self, index: int) -> bool:
        """Whether level ``index`` is still as large as the detector's window (whether scanning from it can find
        anything)."""
        height, width = self._levels[0].shape[:2]
        return min(height, width) / LEVEL_SCALE ** index >= SMALLEST_BOX

    def detect(self, first_level: int = 0, threshold: float = 0.0) -> list[tuple[Box, float, int]] | None:
        """The boxes (in the image's pixels), scores and levels of the faces the detector finds on levels
        ``first_level`` and above, scoring above ``threshold``; None if a box cannot be traced to its level."""
        rects, scores, _ = self._detector.run(self.level(first_level), 0, threshold)
        found = []
        for rect, score in zip(rects, scores):
            placed = self._own_level(rect) if first_level else (rect, 0)
            if placed is None:
                return None
            own, rise = placed
            box = self._down.rect_up(own, rise + first_level) if first_level else rect
            if self.upsample:
                box = self._up.rect_down(box, self.upsample)
            found.append(((box.left(), box.top(), box.right(), box.bottom()), float(score), first_level + rise))
        return found

    def _own_level(self, rect) -> tuple[object, int] | None:
        """A box found on a higher level as the detector placed it there (the rectangle on its own level, and
        how many levels up that is), undoing the rounding of its mapping down, or None."""
        side = min(rect.width(), rect.height())
        guess = max(0, round(math.log(max(side, 1) / SMALLEST_BOX) / math.log(LEVEL_SCALE)))
        for rise in (guess, guess - 1, guess + 1):
            if rise < 0:
                continue
            own = self._down.rect_down(rect, rise)
            if {own.width(), own.height()} <= BOX_SIDES and self._down.rect_up(own, rise) == rect:
                return own, rise
        return None
