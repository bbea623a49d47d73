"""Probe degradations (`lookalike eval --degrade`): each step on arrays built here, and the spec parser."""

import numpy as np
import pytest

from lookalike_cli.evaluation.degrade import blur, dark, degrade, gray, jpeg, parse_degradation, rotate, shrink
from lookalike_cli.errors import LookalikeError


def noise(height=120, width=200, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_shrink_brings_the_longer_side_down_and_never_enlarges():
    assert shrink(noise(120, 200), 160).shape == (96, 160, 3)
    assert shrink(noise(200, 120), 100).shape == (100, 60, 3)
    small = noise(50, 80)
    assert shrink(small, 160) is small


def test_jpeg_keeps_the_size_and_loses_more_at_lower_quality():
    image = noise()
    errors = {quality: np.abs(jpeg(image, quality).astype(int) - image).mean() for quality in (95, 35, 5)}
    assert jpeg(image, 35).shape == image.shape and jpeg(image, 35).dtype == np.uint8
    assert 0 < errors[95] < errors[35] < errors[5]


def test_blur_smooths_more_with_a_larger_radius():
    image = noise()
    spread = {radius: blur(image, radius).astype(float).std() for radius in (0, 1, 3)}
    assert spread[0] == pytest.approx(image.astype(float).std())
    assert spread[0] > spread[1] > spread[3]
    assert blur(image, 3).mean() == pytest.approx(image.mean(), abs=3)


def test_rotate_turns_counter_clockwise_on_a_larger_canvas():
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:, :30] = 255  # left half white
    quarter = rotate(image, 90)
    assert quarter.shape == (60, 40, 3)
    np.testing.assert_array_equal(quarter, np.rot90(image))  # the left half ends at the bottom
    turned = rotate(noise(100, 100), 20)
    bound = 100 * (np.cos(np.radians(20)) + np.sin(np.radians(20)))  # the turned square's bounding box
    assert turned.shape[0] == turned.shape[1] and bound <= turned.shape[0] <= bound + 3
    assert (turned[0, 0] == 0).all()  # the corners are the black canvas


def test_dark_scales_every_value_and_gray_makes_channels_equal():
    image = noise()
    darker = dark(image, 0.25)
    assert darker.dtype == np.uint8 and np.abs(darker - np.rint(image * 0.25)).max() == 0
    assert (dark(image, 1.0) == image).all() and not dark(image, 0.0).any()
    grey = gray(image)
    assert grey.shape == image.shape
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_steps_apply_left_to_right():
    image = noise(300, 400)
    steps = parse_degradation("shrink:160, jpeg:35,gray")
    assert steps == (("shrink", 160.0), ("jpeg", 35.0), ("gray", 0.0))
    np.testing.assert_array_equal(degrade(image, steps), gray(jpeg(shrink(image, 160), 35)))
    assert degrade(image, ()) is image
    assert degrade(image, parse_degradation("rotate:20,shrink:160")).shape[1] == 160


@pytest.mark.parametrize("spec, message", [
    ("sharpen:2", "unknown step 'sharpen' (known: shrink, jpeg, blur, rotate, dark, gray)"),
    ("blur", "blur needs a number, as in blur:100"),
    ("jpeg:high", "jpeg needs a number"),
    ("jpeg:0", "jpeg must be between 1 and 95"),
    ("dark:2", "dark must be between 0 and 1"),
    ("shrink:4", "shrink must be between 16 and 100000"),
    ("gray:1", "gray takes no value"),
    ("shrink:160,", "unknown step ''"),
])
def test_a_bad_spec_is_one_clear_error(spec, message):
    with pytest.raises(LookalikeError, match=f"degradation '{spec}': {message}".replace("(", r"\(")
                       .replace(")", r"\)")):
        parse_degradation(spec)


def test_a_long_spec_is_refused_before_it_is_read():
    with pytest.raises(LookalikeError, match="longer than 200 characters"):
        parse_degradation("gray," * 100 + "gray")
