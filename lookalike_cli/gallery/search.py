"""Nearest-neighbour search by Euclidean distance: exact (numpy, the reference, fastest for small galleries) and
HNSW (nmslib, approximate, for large ones), both answering ``search(queries, k)``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import LookalikeError

BLOCK_ELEMENTS = 1 << 24  # distances computed per block: 64 MiB of float32


class ExactIndex:
    """Exact Euclidean search with numpy, block by block."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.norms = np.einsum("ij,ij->i", self.vectors, self.vectors)

    def __len__(self) -> int:
        return len(self.vectors)

    def squared_distances(self, queries: np.ndarray) -> np.ndarray:
        queries = np.asarray(queries, dtype=np.float32)
        result = self.norms[None, :] - 2.0 * (queries @ self.vectors.T)
        result += np.einsum("ij,ij->i", queries, queries)[:, None]
        return np.maximum(result, 0.0, out=result)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, distances), each (len(queries), k), nearest first."""
        queries = np.atleast_2d(queries)
        k = min(k, len(self))
        ids = np.empty((len(queries), k), dtype=np.int64)
        distances = np.empty((len(queries), k), dtype=np.float32)
        step = max(1, BLOCK_ELEMENTS // max(1, len(self)))
        for start in range(0, len(queries), step):
            block = self.squared_distances(queries[start:start + step])
            part = np.argpartition(block, k - 1, axis=1)[:, :k] if k < len(self) else \
                np.tile(np.arange(len(self)), (len(block), 1))
            # the expansion |q|^2 - 2 q.x + |x|^2 loses precision near 0: measure the k found directly
            part_d = np.linalg.norm(self.vectors[part] - queries[start:start + step, None, :], axis=2)
            order = np.argsort(part_d, axis=1, kind="stable")
            ids[start:start + step] = np.take_along_axis(part, order, axis=1)
            distances[start:start + step] = np.take_along_axis(part_d, order, axis=1)
        return ids, distances

    def nearest_other(self, queries: np.ndarray, query_labels: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """For each query, the distance to its nearest row whose label (``labels``) is not the query's."""
        result = np.empty(len(queries), dtype=np.float64)
        step = max(1, BLOCK_ELEMENTS // max(1, len(self)))
        for start in range(0, len(queries), step):
            block = self.squared_distances(queries[start:start + step])
            block[query_labels[start:start + step][:, None] == labels[None, :]] = np.inf
            result[start:start + step] = np.sqrt(block.min(axis=1))
        return result


def _import_nmslib():
    """Import nmslib without its start-up warning about CPU instructions (printed on file descriptor 2)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import nmslib
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return nmslib


class HnswIndex:
    """nmslib's HNSW graph in the l2 space (which returns squared distances)."""

    def __init__(self, index, size: int, ef_search: int):
        self.index = index
        self.size = size
        index.setQueryTimeParams({"efSearch": ef_search})

    def __len__(self) -> int:
        return self.size

    @classmethod
    def build(cls, vectors: np.ndarray, m: int, ef_construction: int, ef_search: int, threads: int) -> "HnswIndex":
        nmslib = _import_nmslib()
        index = nmslib.init(method="hnsw", space="l2", data_type=nmslib.DataType.DENSE_VECTOR)
        index.addDataPointBatch(np.asarray(vectors, dtype=np.float32))
        index.createIndex({"M": m, "efConstruction": ef_construction, "post": 0,
                           "indexThreadQty": threads}, print_progress=False)
        return cls(index, len(vectors), ef_search)

    @classmethod
    def load(cls, path: Path, size: int, ef_search: int) -> "HnswIndex":
        nmslib = _import_nmslib()
        index = nmslib.init(method="hnsw", space="l2", data_type=nmslib.DataType.DENSE_VECTOR)
        try:
            index.loadIndex(str(path), load_data=True)
        except Exception as exc:
            raise LookalikeError(f"{path} is damaged ({exc}): run `lookalike index` again") from None
        return cls(index, size, ef_search)

    def save(self, path: Path) -> None:
        self.index.saveIndex(str(path), save_data=True)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        k = min(k, self.size)
        results = self.index.knnQueryBatch(queries, k=k, num_threads=1)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        distances = np.full((len(queries), k), np.inf, dtype=np.float32)
        for row, (found, squared) in enumerate(results):
            ids[row, :len(found)] = found
            distances[row, :len(found)] = np.sqrt(np.maximum(squared, 0.0))
        return ids, distances
