import math

import pytest

from lookalike_cli.geometry import box_area, eye_centers, eye_distance, head_tilt, scale_box

LEVEL = [(128, 100), (108, 100), (58, 100), (78, 100), (93, 138)]  # dlib 5-point order, level eyes


def test_eye_centers_are_the_middle_of_each_eyes_corners():
    assert eye_centers(LEVEL) == ((118, 100), (68, 100))


def test_eye_distance_in_pixels():
    assert eye_distance(LEVEL) == 50


@pytest.mark.parametrize("degrees", [-40, -10, 0, 5, 30, 89])
def test_head_tilt_recovers_a_rotation(degrees):
    angle = math.radians(degrees)
    cx, cy = 100, 100
    rotated = [(cx + (x - cx) * math.cos(angle) - (y - cy) * math.sin(angle),
                cy + (x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)) for x, y in LEVEL]
    assert head_tilt(rotated) == pytest.approx(degrees, abs=1e-6)


def test_head_tilt_does_not_depend_on_which_eye_comes_first():
    swapped = LEVEL[2:4] + LEVEL[0:2] + LEVEL[4:]
    assert head_tilt(swapped) == pytest.approx(0.0, abs=1e-9)


def test_eye_centers_need_five_points():
    with pytest.raises(ValueError):
        eye_centers(LEVEL[:4])


def test_box_area_and_scale():
    assert box_area((10, 20, 30, 60)) == 800
    assert box_area((30, 20, 10, 60)) == 0
    assert scale_box((50, 25, 100, 75), 0.5) == (100, 50, 200, 150)
