"""The pure helpers of benchmarks/: recall against exact search, percentiles, the synthetic-vector sampler.

No timing is asserted here: speed is measured by `make bench` and recorded in benchmarks/RESULTS.md.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_index import nearest_distances, sampler, text_histogram  # noqa: E402
from common import markdown_table, median, percentile, recall_at  # noqa: E402


def test_recall_counts_true_neighbours_among_the_first_k_found():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[1, 3, 9], [7, 8, 4]])
    assert recall_at(found, truth, 1) == 0.5  # 1 right, 7 wrong
    assert recall_at(found, truth, 3) == pytest.approx((2 + 1) / 6)


def test_percentiles_and_median():
    values = [4.0, 1.0, 3.0, 2.0]
    assert median(values) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile(list(range(101)), 99) == 99.0


def test_markdown_table_has_a_row_per_item():
    table = markdown_table(["a", "b"], [[1, 2], [3, 4]]).splitlines()
    assert table == ["| a | b |", "| --- | --- |", "| 1 | 2 |", "| 3 | 4 |"]


def test_nearest_distances_are_exact():
    vectors = np.array([[0, 0], [3, 4], [3, 5]], dtype=np.float32)
    assert nearest_distances(vectors).tolist() == pytest.approx([5.0, 1.0, 1.0])


def test_synthetic_vectors_match_the_median_nearest_distance_of_the_real_ones():
    rng = np.random.default_rng(7)
    # "real": anisotropic, low intrinsic dimension, like face descriptors
    real = (rng.standard_normal((300, 8)) @ rng.standard_normal((8, 32)) * 0.1).astype(np.float32)
    sample, _ = sampler(real)
    synthetic = sample(300, 11)
    assert synthetic.shape == real.shape and synthetic.dtype == np.float32
    assert np.median(nearest_distances(synthetic)) == pytest.approx(np.median(nearest_distances(real)), rel=0.1)


def test_text_histogram_shares_add_up():
    text = text_histogram({"a": np.array([0.1, 0.2, 0.3, 0.4]), "b": np.array([0.2, 0.2, 0.3, 0.5])}, bins=4)
    shares = [float(cell.rstrip("%")) for line in text.splitlines()[2:-1] for cell in line.split()
              if cell.endswith("%")]
    assert sum(shares) == pytest.approx(200.0, abs=0.5)
