
import pytest

from lookalike_cli.gallery.similarity import Calibration, calibration_from_distances, normal_cdf


def test_normal_cdf_known_values():
    assert normal_cdf(0) == 0.5
    assert normal_cdf(1.959963984540054) == pytest.approx(0.975, abs=1e-9)
    assert normal_cdf(-1) == pytest.approx(1 - normal_cdf(1))


def test_similarity_is_the_share_of_strangers_farther_away():
    calibration = Calibration(mean=0.6, std=0.05, count=100, min_similarity=0.01)
    assert calibration.similarity(0.6) == pytest.approx(0.5)
    assert calibration.similarity(0.5) == pytest.approx(normal_cdf(2))
    assert calibration.similarity(0.0) == pytest.approx(1.0)
    assert calibration.similarity(0.7) == pytest.approx(1 - normal_cdf(2))


def test_similarity_never_goes_below_the_floor_and_decreases_with_distance():
    calibration = Calibration(mean=0.6, std=0.05, count=100, min_similarity=0.05)
    assert calibration.similarity(2.0) == 0.05
    values = [calibration.similarity(d / 100) for d in range(0, 150)]
    assert values == sorted(values, reverse=True)


def test_calibration_from_distances_uses_the_sample_std():
    calibration = calibration_from_distances([0.5, 0.6, 0.7], 0.01)
    assert calibration.mean == pytest.approx(0.6)
    assert calibration.std == pytest.approx(0.1)
    assert calibration.count == 3


@pytest.mark.parametrize("values", [[0.5], [0.6, 0.6, 0.6]])
def test_calibration_needs_spread(values):
    with pytest.raises(ValueError):
        calibration_from_distances(values, 0.01)
