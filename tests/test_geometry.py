import math

import pytest

from lookalike_cli.imaging.geometry import (box_area, enlarging_factor, eye_centers, eye_distance, face_problem,
                                            head_tilt, pixels_factor, scale_box, shrink_factor)

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


def test_face_problem_names_the_first_check_that_fails():
    assert face_problem(50, 10, 20, 25) is None
    assert face_problem(50, -30, 20, 25) == "tilted"
    assert face_problem(19.9, 10, 20, 25) == "small_face"
    assert face_problem(10, 40, 20, 25) == "small_face"
    assert face_problem(20, -25, 20, 25) is None  # the limits themselves pass


def test_shrink_factor_only_shrinks_what_is_over_the_limit():
    assert shrink_factor(2048, 1000, 1024) == 0.5
    assert shrink_factor(1000, 2048, 1024) == 0.5
    assert shrink_factor(1024, 700, 1024) == 1.0
    assert shrink_factor(5000, 5000, 0) == 1.0  # no limit


def test_pixels_factor_resizes_to_a_pixel_budget_up_or_down():
    assert pixels_factor(160, 100, 64_000) == 2.0
    assert pixels_factor(2000, 1000, 500_000) == 0.5
    width, height, factor = 117, 160, pixels_factor(117, 160, 250_000)
    assert round(width * factor) * round(height * factor) == pytest.approx(250_000, rel=0.01)


def test_enlarging_factor_only_when_it_searches_smaller_faces_than_before():
    assert enlarging_factor(160, 100, 256_000, 2.0) == 4.0  # a 160 px photo, searched at 2x (upsample 1)
    assert enlarging_factor(400, 250, 256_000, 2.0) == 0.0  # 1.6x: the first look searched finer
    assert enlarging_factor(500, 500, 1_000_000, 2.0) == 0.0  # exactly the first look's scale
