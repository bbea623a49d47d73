"""Which of one person's photos show the same face, and what the index holds per person: pure maths on
descriptors, used by the clean stage and by eval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERSON_STATUSES = ("agree", "single_photo", "no_agreement")


@dataclass(frozen=True)
class Identity:
    """The dominant identity among one person's photos."""

    kept: np.ndarray  # bool per photo
    medoid: int  # the representative photo
    medoid_distances: np.ndarray  # of every photo to the medoid
    status: str  # one of PERSON_STATUSES


def pairwise_distances(vectors: np.ndarray) -> np.ndarray:
    """The Euclidean distance matrix of a few vectors."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return np.linalg.norm(vectors[:, None, :] - vectors[None, :, :], axis=2)


def dominant_identity(vectors: np.ndarray, same_person_distance: float) -> Identity:
    """Find the largest group of photos within ``same_person_distance`` of one of them (ties: the tighter
    group); it is the person's identity unless another, disjoint group is as large."""
    count = len(vectors)
    if count == 1:
        return Identity(np.ones(1, dtype=bool), 0, np.zeros(1), "single_photo")
    distances = pairwise_distances(vectors)
    near = distances <= same_person_distance
    sizes = near.sum(axis=1)
    spread = np.where(near, distances, 0.0).sum(axis=1) / sizes
    centre = int(np.lexsort((np.arange(count), spread, -sizes))[0])
    group = near[centre]
    rest = ~group
    rival = near[np.ix_(rest, rest)].sum(axis=1).max(initial=0)
    if sizes[centre] == 1 or rival >= sizes[centre]:
        medoid = int(np.argmin(distances.sum(axis=1)))
        return Identity(np.ones(count, dtype=bool), medoid, distances[medoid], "no_agreement")
    return Identity(group, centre, distances[centre], "agree")


def gallery_selection(vectors: np.ndarray, labels: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The vectors the index holds for photos ``vectors`` of people ``labels``: every photo (``photos``), each
    person's mean descriptor (``mean``), or both. Returns (vectors, labels, source photo or -1 for a mean)."""
    photos = np.arange(len(vectors))
    if mode == "photos":
        return vectors, labels, photos
    people, inverse = np.unique(labels, return_inverse=True)
    means = np.zeros((len(people), vectors.shape[1]), dtype=np.float64)
    np.add.at(means, inverse, vectors)
    means = (means / np.bincount(inverse)[:, None]).astype(np.float32)
    no_photo = np.full(len(people), -1)
    if mode == "mean":
        return means, people, no_photo
    return (np.concatenate([vectors, means]), np.concatenate([labels, people]),
            np.concatenate([photos, no_photo]))
