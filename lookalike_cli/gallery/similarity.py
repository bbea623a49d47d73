"""From a descriptor distance to a percent similarity, and the calibration that makes it meaningful."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable


def normal_cdf(x: float) -> float:
    """Phi, the standard normal cumulative distribution, via math.erf."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@dataclass(frozen=True)
class Calibration:
    """Mean and spread of the distance from a gallery face to its nearest *other* person."""

    mean: float
    std: float
    count: int
    min_similarity: float

    def similarity(self, distance: float) -> float:
        """max(min(1 - Phi((d - mean) / std), 1), min_similarity): the share of strangers who are farther."""
        return max(min(1.0 - normal_cdf((distance - self.mean) / self.std), 1.0), self.min_similarity)


def calibration_from_distances(distances: Iterable[float], min_similarity: float) -> Calibration:
    """Fit the calibration to a sample of nearest-other-person distances."""
    values = [float(d) for d in distances]
    if len(values) < 2:
        raise ValueError("calibration needs at least two distances")
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
    if not std > 0:
        raise ValueError("calibration distances have no spread (are the gallery photos identical?)")
    return Calibration(mean=mean, std=std, count=len(values), min_similarity=min_similarity)
