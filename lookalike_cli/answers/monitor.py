"""What ``serve`` and ``bot`` record of their answers: the answer log (``log.py``) and Prometheus metrics.

Each app has a ``Monitor`` with a metrics registry of its own (not prometheus-client's global one), so that
several servers in one process keep their own counts. Recording an answer costs a few counter updates and, with
a log, putting its entry on the log's queue: nothing waits for the disk or the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from ..config import Config
from ..face.models import DETECTORS
from .log import AnswerLog, answer_entry, client_hash
from .outcomes import OUTCOMES

if TYPE_CHECKING:
    from .recognizer import Recognizer
    from .results import PhotoResult

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
FACE_BUCKETS = (0, 1, 2, 3, 5, 10, 20)


class GalleryCollector:
    """The figures of the generation a recognizer serves, read when metrics are collected (it can switch to a
    newly published one while it runs)."""

    def __init__(self, recognizer: Recognizer):
        self.recognizer = recognizer

    def collect(self):
        gallery = self.recognizer.gallery
        yield GaugeMetricFamily("lookalike_gallery_vectors", "Vectors in the gallery's index", value=gallery["size"])
        yield GaugeMetricFamily("lookalike_gallery_people", "People in the gallery", value=gallery["people"] or 0)
        yield InfoMetricFamily("lookalike_gallery", "The gallery answering: its generation and index backend",
                               value={"generation": gallery["generation"], "backend": gallery["backend"]})


class NodesCollector:
    """Workers and photos answered per node (this machine, or each node of a Ray cluster), read when metrics are
    collected."""

    def __init__(self, recognizer: Recognizer):
        self.recognizer = recognizer

    def collect(self):
        nodes = self.recognizer.nodes()
        workers = GaugeMetricFamily("lookalike_node_workers", "Recognition workers ready, by node", labels=["node"])
        answers = CounterMetricFamily("lookalike_node_answers", "Photos the workers of a node answered, since the "
                                      "generation served was loaded", labels=["node"])
        for node, figures in nodes.items():
            workers.add_metric([node], figures["workers"])
            answers.add_metric([node], figures["answers"])
        yield workers
        yield answers


class Monitor:
    """Records each answer of one channel ("http", "bot") in the answer log (when ``answers.log`` is set) and in
    Prometheus metrics (when ``serve.metrics`` is on)."""

    def __init__(self, config: Config, channel: str, recognizer: Recognizer):
        self.channel = channel
        self.recognizer = recognizer
        self.salt = config.serve.client_salt
        self.log = AnswerLog(config.answers) if config.answers.log else None
        self.registry = CollectorRegistry() if config.serve.metrics else None
        if self.registry is not None:
            self._add_metrics(recognizer)

    def _add_metrics(self, recognizer: Recognizer) -> None:
        registry = self.registry
        self.answers = Counter("lookalike_answers", "Photos answered, by status (see docs/operations.md)", ["status"],
                               registry=registry)
        for status in OUTCOMES:
            self.answers.labels(status)  # every status shows, at 0 until it happens
        self.latency = Histogram("lookalike_answer_seconds", "Time from a photo's arrival to its answer, for "
                                 "photos a worker answered", buckets=LATENCY_BUCKETS, registry=registry)
        self.faces = Histogram("lookalike_faces_per_photo", "Faces found per photo read", buckets=FACE_BUCKETS,
                               registry=registry)
        self.no_face = Counter("lookalike_photos_without_face", "Photos read in which no face was found",
                               registry=registry)
        self.found_by = Counter("lookalike_faces_found", "Faces answered, by the look of the detection chain that "
                                f"found them ({', '.join(DETECTORS)})", ["detector"], registry=registry)
        for detector in DETECTORS:
            self.found_by.labels(detector)
        Gauge("lookalike_queue_depth", "Photos waiting for a free worker", registry=registry).set_function(
            lambda: recognizer.queue_depth)
        Gauge("lookalike_workers_busy", "Workers answering a photo", registry=registry).set_function(
            lambda: recognizer.in_work)
        Gauge("lookalike_workers", "Recognition workers", registry=registry).set_function(lambda: recognizer.workers)
        registry.register(GalleryCollector(recognizer))
        registry.register(NodesCollector(recognizer))

    def answered(self, status: str, seconds: float, result: PhotoResult | None = None, client: str | None = None,
                 **extra) -> None:
        """Record one answer: its status, the seconds it took, the worker's result (None when no worker gave
        one), the client (hashed, and only with ``client_salt`` set); ``extra`` goes into the log line."""
        if self.log is not None:
            if self.salt and client is not None:
                extra["client"] = client_hash(client, self.salt)
            self.log.write(answer_entry(self.channel, self.recognizer.generation, status, seconds, result, **extra))
        if self.registry is None:
            return
        self.answers.labels(status).inc()
        if result is not None:
            self.latency.observe(seconds)
            if not result.reason:
                self.faces.observe(len(result.faces) + result.faces_left_out)
                if not result.faces:
                    self.no_face.inc()
                for face in result.faces:
                    self.found_by.labels(face.detector).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
