"""Stage 3, clean: keep the photos of each person that show the same face, and choose what the index holds.

Image search for a name also returns co-stars, look-alikes and posters. Among one person's descriptors, the
dominant identity is the largest group of photos within ``same_person_distance`` of one of them, its medoid;
the other photos are rejected as ``other_identity``. A person whose photos form no group of two, or two
groups of the same size, is marked ``no_agreement`` and keeps every photo (nothing says which face is the
person's); a person with one photo is ``single_photo``. The medoid is the person's representative photo,
the one query results show.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import numpy as np

from .artifacts import SCHEMA_VERSION, DataDir, artifact_id, read_json, read_vectors, write_json, write_table
from .config import CleanConfig, Config
from .errors import LookalikeError

log = logging.getLogger(__name__)

PERSON_STATUSES = ("agree", "single_photo", "no_agreement")


@dataclass(frozen=True)
class Identity:
    """The dominant identity among one person's photos."""

    kept: np.ndarray  # bool per photo
    medoid: int  # the representative photo
    medoid_distances: np.ndarray  # of every photo to the medoid
    status: str  # one of PERSON_STATUSES


@dataclass(frozen=True)
class CleanSummary:
    photos: int
    kept: int
    rejected: int
    people: dict[str, int]  # person status -> count
    no_agreement: list[str]
    gallery_vectors: int


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


def identify_people(rows: list[dict], vectors: np.ndarray, config: CleanConfig) -> list[dict]:
    """``identities`` rows for embedding rows sorted by alias: kept or rejected, and each person's status."""
    out: list[dict] = []
    start = 0
    for alias, group in groupby(rows, key=lambda row: row["alias"]):
        group = list(group)
        identity = dominant_identity(vectors[start:start + len(group)], config.same_person_distance)
        start += len(group)
        keep_all = config.other_identities == "keep"
        for number, row in enumerate(group):
            kept = bool(identity.kept[number]) or keep_all
            out.append({"path": row["path"], "alias": alias, "sha256": row["sha256"],
                        "status": "kept" if kept else "rejected",
                        "reason": "ok" if identity.kept[number] else "other_identity",
                        "medoid_distance": float(identity.medoid_distances[number]),
                        "person_status": identity.status, "representative": number == identity.medoid})
    return out


def clean_identities(data_dir: str | Path, config: Config = Config()) -> CleanSummary:
    """Run the clean stage on ``embeddings.parquet``; writes ``identities.parquet``, ``gallery.parquet``
    (the vectors to calibrate and index) and ``clean.json``."""
    data = DataDir(Path(data_dir))
    rows, vectors = read_vectors(data, "embeddings")
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["alias"], rows[i]["path"]))
    rows, vectors = [rows[i] for i in order], vectors[order]
    identities = identify_people(rows, vectors, config.clean)
    kept = np.array([row["status"] == "kept" for row in identities], dtype=bool)
    labels = np.array([row["alias"] for row in rows], dtype=object)
    representative = {row["alias"]: row["path"] for row in identities if row["representative"]}
    selected, selected_labels, sources = gallery_selection(vectors[kept], labels[kept],
                                                           config.clean.gallery_vectors)
    kept_rows = [row for row, keep in zip(rows, kept) if keep]
    gallery = [{"alias": alias, "kind": "photo" if source >= 0 else "mean",
                "path": kept_rows[source]["path"] if source >= 0 else None, "image": representative[alias],
                "embed_key": rows[0]["embed_key"], "embedding": vector.tolist()}
               for vector, alias, source in zip(selected, selected_labels, sources)]
    write_table(data.identities, "identities", identities)
    write_table(data.gallery, "gallery", gallery)
    people = {row["alias"]: row["person_status"] for row in identities}
    no_agreement = sorted(alias for alias, status in people.items() if status == "no_agreement")
    counts = Counter(people.values())
    summary = CleanSummary(photos=len(rows), kept=int(kept.sum()),
                           rejected=sum(row["reason"] == "other_identity" for row in identities),
                           people={status: counts.get(status, 0) for status in PERSON_STATUSES},
                           no_agreement=no_agreement, gallery_vectors=len(gallery))
    write_json(data.clean, {
        "schema_version": SCHEMA_VERSION, "embeddings_id": artifact_id(data.embeddings),
        "gallery_id": artifact_id(data.gallery), "same_person_distance": config.clean.same_person_distance,
        "other_identities": config.clean.other_identities, "gallery_vectors": config.clean.gallery_vectors,
        "photos": summary.photos, "kept": summary.kept, "rejected": summary.rejected, "people": summary.people,
        "no_agreement": no_agreement,
    })
    log.info("clean: %d of %d photos kept; people %s", summary.kept, summary.photos, summary.people)
    return summary


def check_gallery(data: DataDir) -> None:
    """Raise unless ``gallery.parquet`` is the one the clean stage made from the current embeddings."""
    meta = read_json(data.require(data.clean, "clean"), "clean")
    if meta.get("embeddings_id") != artifact_id(data.require(data.embeddings, "embed")):
        raise LookalikeError(f"{data.gallery} is older than {data.embeddings}: run `lookalike clean` again")
    if meta.get("gallery_id") != artifact_id(data.require(data.gallery, "clean")):
        raise LookalikeError(f"{data.gallery} was changed after `lookalike clean`: run it again")
