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

from ..config import CleanConfig, Config
from ..face.identity import PERSON_STATUSES, dominant_identity, gallery_selection
from ..io.artifacts import DataDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CleanSummary:
    photos: int
    kept: int
    rejected: int
    people: dict[str, int]  # person status -> count
    no_agreement: list[str]
    gallery_vectors: int


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
    data = DataDir(data_dir)
    with data.locked("clean"):
        rows, vectors = data.vectors("embeddings")
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
        data.write("identities", identities)
        data.write("gallery", gallery)
        people = {row["alias"]: row["person_status"] for row in identities}
        no_agreement = sorted(alias for alias, status in people.items() if status == "no_agreement")
        counts = Counter(people.values())
        summary = CleanSummary(photos=len(rows), kept=int(kept.sum()),
                               rejected=sum(row["reason"] == "other_identity" for row in identities),
                               people={status: counts.get(status, 0) for status in PERSON_STATUSES},
                               no_agreement=no_agreement, gallery_vectors=len(gallery))
        data.write("clean", {
            "same_person_distance": config.clean.same_person_distance,
            "other_identities": config.clean.other_identities, "gallery_vectors": config.clean.gallery_vectors,
            "photos": summary.photos, "kept": summary.kept, "rejected": summary.rejected, "people": summary.people,
            "no_agreement": no_agreement,
        })
    log.info("clean: %d of %d photos kept; people %s", summary.kept, summary.photos, summary.people)
    return summary
