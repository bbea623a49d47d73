"""The typed configuration: one dataclass per section of ``configs/default.toml``.

Every key is also a command-line option of the commands that use its section (``filter.max_tilt`` is
``--max-tilt``); an option given on the command line overrides the file. Key names are unique across the
sections one command uses, so the option name alone says which key it sets.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import LookalikeError
from .files import read_regular, reason
from .language import LANGUAGES, SOURCE_LANGUAGE

MAX_CONFIG_BYTES = 1_000_000  # a config file is a few kB
MAX_NUMBER = 10**15  # the largest magnitude of any number setting (bytes, pixels, counts overflow far beyond)
MAX_SECONDS = 86_400.0  # a day: the longest timeout accepted (the OS's timers stop at about 24 days)

# Pillow's names of the image formats that image.image_formats may list (every one is decoded and tested).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")


def setting(default: Any, help: str, *, min: float | None = None, max: float | None = None,
            choices: tuple[str, ...] | None = None, several: bool = False,
            check: Callable[[Any], str | None] | None = None) -> Any:
    """A config field with its help text and allowed range, shared by the TOML loader and the CLI. With
    ``several``, the value is a space-separated list of the ``choices``; ``check`` says what is wrong with a
    value (None when nothing is)."""
    return field(default=default, metadata={"help": help, "min": min, "max": max, "choices": choices,
                                            "several": several, "check": check})


MAX_NETWORKS = 100  # addresses or networks in one setting


def networks_problem(value: str) -> str | None:
    """What is wrong with a space-separated list of IP addresses and networks (CIDR), or None."""
    words = value.split()
    if len(words) > MAX_NETWORKS:
        return f"must list at most {MAX_NETWORKS} addresses or networks"
    for word in words:
        try:
            ipaddress.ip_network(word, strict=False)
        except ValueError:
            return f"must list IP addresses or networks such as 10.0.0.0/8, not {word[:60]!r}"
    return None


@dataclass(frozen=True)
class CrawlConfig:
    engine: str = setting("bing", "where photos come from: Bing or Baidu image search by the person's name, or "
                                  "urls: a CSV/Parquet list of alias,url given with --urls",
                          choices=("bing", "baidu", "urls"))
    per_person: int = setting(5, "photos kept per person; people who have them are skipped on re-runs", min=1,
                              max=1000)
    threads: int = setting(32, "people crawled at once (a thread downloads one person's photos at a time)",
                           min=1, max=512)
    query_suffix: str = setting("", "words searched after the person's name, e.g. face or actor")
    search_results: int = setting(100, "search results looked through per person at most, a page at a time",
                                  min=1, max=1000)
    search_host: str = setting("", "send search requests to this http://host:port instead of the engine's "
                                   "(a mirror, or a local test server)")
    download_timeout: float = setting(10.0, "seconds a photo or result page may take to arrive, in total: name "
                                            "lookup, connection, headers and body", min=0.1, max=600.0)
    max_download_bytes: int = setting(20_000_000, "reject photos larger than this many bytes, reading no "
                                                  "further", min=1)
    max_search_page_bytes: int = setting(5_000_000, "give up a search result page larger than this many bytes, "
                                                    "reading no further", min=1)
    allow_private_addresses: bool = setting(False, "fetch URLs from search results even when their host "
                                                   "resolves to a loopback, private, link-local, multicast or "
                                                   "reserved address (a local mirror; URL lists are always "
                                                   "fetched)")
    max_download_pixels: int = setting(40_000_000, "reject photos with more pixels, before decoding them",
                                       min=1)
    min_download_side: int = setting(80, "reject photos whose shorter side has fewer pixels", min=1)


@dataclass(frozen=True)
class RuntimeConfig:
    workers: int = setting(0, "worker processes for dlib work (0: one per core; with Ray, one per CPU of the "
                              "cluster)", min=0, max=256)
    models_dir: str = setting("", "folder with dlib's model files (empty: the face_recognition_models package)")
    descriptor_backend: str = setting("auto", "what computes face descriptors: dlib, or dlib's network run by numpy "
                                              "(dlib's numbers within 1e-4, several times faster); auto: numpy once "
                                              "it has matched dlib on first use", choices=("auto", "dlib", "numpy"))
    executor: str = setting("local", "where the dlib work runs (filter and embed, serve's and the bot's "
                                     "recognition): worker processes on this machine, or actors on a Ray "
                                     "cluster (pip install 'lookalike[ray]')",
                            choices=("local", "ray"))
    ray_address: str = setting("", "the Ray cluster of --executor ray: auto (the cluster this machine is a node "
                                   "of), host:port of its head, or ray://host:port (Ray Client); empty: start "
                                   "a Ray on this machine")


@dataclass(frozen=True)
class DetectConfig:
    upsample: int = setting(1, "times the HOG detector doubles the image to find small faces", min=0, max=3)
    min_detection_score: float = setting(0.0, "drop detections scoring below this (dlib's HOG score)",
                                         min=-10.0, max=10.0)
    detect_max_size: int = setting(1024, "detect on a copy shrunk to this many pixels on its longer side, "
                                         "landmarks on the full image (0: never shrink)", min=0, max=100_000)
    coarse_face_share: float = setting(0.2, "HOG's first look is coarse to fine: the coarse part skips the "
                                            "costly levels that find only faces smaller than this share of the "
                                            "photo's shorter side; when every face it finds is larger, those "
                                            "are the faces (the same boxes), else the fine part looks at every "
                                            "size (0: always the fine part)", min=0.0, max=1.0)
    fallback: bool = setting(True, "when HOG finds no face in a query photo, look again: HOG on a copy enlarged to "
                                   "fallback_hog_pixels (when the photo is small), then dlib's CNN detector on a "
                                   "copy resized to cnn_pixels (false, --no-fallback: answer no face)")
    fallback_stretch_span: int = setting(128, "a photo whose brightness spans fewer levels (of 255, its darkest "
                                              "and brightest 1% aside) is dim or flat: the fallback looks at it "
                                              "with those levels stretched to the full range, first with HOG as "
                                              "the first look did (0: never; 256: every photo)", min=0, max=256)
    fallback_hog_pixels: int = setting(250_000, "the second HOG look runs on a copy enlarged to this many pixels, "
                                                "when that searches smaller faces than the first look",
                                       min=1, max=16_000_000)
    cnn_pixels: int = setting(160_000, "the CNN detector runs on a copy resized to this many pixels (its time "
                                       "grows with them)", min=1, max=4_000_000)
    cnn_min_score: float = setting(0.0, "drop CNN detections scoring below this (dlib's CNN confidence)",
                                   min=-10.0, max=10.0)
    fallback_min_eye_distance: float = setting(6.0, "drop faces found by the fallback whose eye centres are "
                                                    "closer, in pixels of the photo", min=0.0)
    fallback_max_tilt: float = setting(25.0, "drop faces found by the fallback whose eye line is tilted more, "
                                             "in degrees", min=0.0, max=90.0)


@dataclass(frozen=True)
class ImageConfig:
    """How every command reads an image it is given (gallery photo, query, upload): the bounds a stranger's file
    meets before and while it is decoded."""

    image_formats: str = setting("JPEG PNG WEBP GIF BMP", "image formats read, by Pillow's names separated by "
                                 "spaces; other files are rejected (unsupported_format) before a decoder sees "
                                 "them", choices=IMAGE_FORMATS, several=True)
    max_file_bytes: int = setting(50_000_000, "reject image files (or standard input) larger than this many "
                                              "bytes, reading no further", min=1)
    max_image_pixels: int = setting(40_000_000, "reject images with more pixels, from their header, before "
                                                "decoding them", min=1)
    max_decoded_bytes: int = setting(200_000_000, "memory decoding an image may take (Pillow's image and the "
                                                  "RGB array made from it): a larger JPEG is decoded at 1/2, "
                                                  "1/4 or 1/8 scale to fit, another format is rejected "
                                                  "(too_large)", min=1)
    decode_timeout: float = setting(10.0, "seconds a worker may spend decoding one image; then the worker is "
                                          "stopped and replaced, and the image rejected (timeout)", min=0.01,
                                    max=MAX_SECONDS)


@dataclass(frozen=True)
class FilterConfig:
    min_image_size: int = setting(80, "reject images whose shorter side has fewer pixels", min=1)
    min_eye_distance: float = setting(20.0, "reject faces whose eye centres are closer, in pixels", min=0.0)
    max_tilt: float = setting(25.0, "reject faces whose eye line is tilted more, in degrees", min=0.0,
                              max=90.0)
    multiple_faces: str = setting("reject", "a gallery photo with several faces: reject it, or keep its "
                                            "largest face", choices=("reject", "largest"))
    gallery_fallback: bool = setting(False, "when HOG finds no face in a gallery photo, run the query's "
                                            "detection fallback too (crawled galleries have photos to spare; a "
                                            "hand-made one may not)")


@dataclass(frozen=True)
class EmbedConfig:
    num_jitters: int = setting(10, "descriptor of a gallery face: mean over this many jittered copies "
                                   "(1: no jitter)", min=1, max=100)


@dataclass(frozen=True)
class CleanConfig:
    same_person_distance: float = setting(0.6, "a person's photos agree when their descriptors are within this "
                                               "distance of the group's medoid (dlib's threshold is 0.6)",
                                          min=0.0, max=2.0)
    other_identities: str = setting("reject", "photos that do not show the person's dominant identity: reject "
                                              "them, or keep them (only reported)", choices=("reject", "keep"))
    gallery_vectors: str = setting("mean", "what the index holds per person: every kept photo, the mean of "
                                           "the kept photos, or both", choices=("photos", "mean", "both"))


@dataclass(frozen=True)
class CalibrateConfig:
    min_similarity: float = setting(0.01, "the lowest similarity ever reported", min=0.0, max=1.0)
    calibration_sample: int = setting(20_000, "gallery photos whose nearest other person is measured",
                                      min=2)


@dataclass(frozen=True)
class IndexConfig:
    backend: str = setting("auto", "nearest-neighbour search: exact (numpy), hnsw (nmslib) or auto "
                                   "(exact up to exact_max_size vectors)", choices=("auto", "exact", "hnsw"))
    exact_max_size: int = setting(100_000, "auto uses exact search up to this many vectors", min=0)
    hnsw_m: int = setting(32, "HNSW links per node (nmslib M)", min=2, max=512)
    hnsw_ef_construction: int = setting(200, "HNSW candidate list while building (efConstruction)",
                                        min=1, max=100_000)
    hnsw_ef_search: int = setting(400, "HNSW candidate list while searching (efSearch)", min=1,
                                  max=100_000)


@dataclass(frozen=True)
class QueryConfig:
    top_k: int = setting(1, "people to answer per face", min=1, max=1000)
    query_num_jitters: int = setting(1, "descriptor of a query face: mean over this many jittered copies",
                                     min=1, max=100)
    max_faces: int = setting(10, "faces answered per photo, the largest first; the answer says how many "
                                 "smaller ones were left out", min=1, max=1000)


@dataclass(frozen=True)
class ServeConfig:
    host: str = setting("127.0.0.1", "address the HTTP API (or the bot's webhook) listens on (0.0.0.0: every "
                                     "interface)")
    port: int = setting(8000, "port the HTTP API (or the bot's webhook) listens on (0: any free port)", min=0,
                        max=65535)
    queue_size: int = setting(16, "photos waiting for a recognition worker before new ones are turned away",
                              min=0, max=10_000)
    max_body_bytes: int = setting(10_000_000, "largest photo accepted, in bytes (HTTP body or bot file)",
                                  min=1)
    request_timeout: float = setting(30.0, "seconds a photo may wait and be recognised before it is given up "
                                           "(its worker is stopped and replaced)", min=0.01,
                                     max=MAX_SECONDS)
    max_connections: int = setting(128, "open HTTP connections at most; one more is answered 503 and closed",
                                   min=1, max=100_000)
    max_client_photos: int = setting(2, "photos of one client (an HTTP address, a Telegram chat) in work at once, "
                                        "received, waiting or being answered; more are answered 429 (the bot: told "
                                        "to wait), so that one client cannot take every worker", min=1,
                                     max=10_000)
    max_client_connections: int = setting(16, "open HTTP connections from one client address at most, so that "
                                              "one client cannot hold them all; one more is answered 503 and "
                                              "closed (a trusted proxy's are not counted)", min=1, max=100_000)
    trusted_proxies: str = setting("", "addresses or networks (CIDR) of the reverse proxies in front, separated by "
                                       "spaces (nginx: see docs/deploy.md): a request from one of them is its "
                                       "X-Forwarded-For client's (the last address no trusted proxy added), for "
                                       "the answer log and every per-client limit; from any other address the "
                                       "header is ignored", check=networks_problem)
    header_timeout: float = setting(10.0, "seconds a client may take to send a request's headers", min=0.01,
                                    max=MAX_SECONDS)
    body_timeout: float = setting(60.0, "seconds a client may take to send a photo once its headers arrived (the "
                                        "bot: to fetch a photo from Telegram)", min=0.01, max=MAX_SECONDS)
    max_body_chunks: int = setting(10_000, "a chunked body sent in more chunks is refused (400): tiny chunks "
                                           "cost the server more to parse than they carry", min=1)
    large_photo_pixels: int = setting(16_000_000, "photos of more pixels (from their header; also a header that "
                                                  "cannot be read) are recognised by all workers but one at most, "
                                                  "so that large photos never hold every worker", min=1)
    reload_seconds: float = setting(10.0, "look for a newly published gallery this often, and answer from it once "
                                          "it is loaded (0: only on SIGHUP)", min=0.0, max=MAX_SECONDS)
    page: bool = setting(True, "serve the web page at /, where people upload a selfie (false, --no-page: the "
                                 "HTTP API alone)")
    metrics: bool = setting(True, "count answers for Prometheus: GET /metrics of serve, --metrics-port of bot "
                                  "(false, --no-metrics: no counting)")
    language: str = setting(SOURCE_LANGUAGE, "language of the page, the bot and the answer pictures for people "
                                             "whose browser or Telegram asks for none of the languages "
                                             "(lookalike_cli/locales/)", choices=LANGUAGES)
    client_salt: str = setting("", "put a salted hash of the client (HTTP address, Telegram chat) in the answer "
                                   "log, with this secret of the deployment (empty: no client in the log)")


@dataclass(frozen=True)
class BotConfig:
    bot_api_url: str = setting("https://api.telegram.org/bot", "Telegram Bot API endpoint, the token is "
                                                               "appended (a local Bot API server works too)")
    bot_file_url: str = setting("https://api.telegram.org/file/bot", "Telegram Bot API file download "
                                                                     "endpoint, the token is appended")
    bot_max_rate: float = setting(30.0, "messages per second the bot sends at most (Telegram allows about "
                                        "30)", min=0.1, max=1000.0)
    webhook_url: str = setting("", "public HTTPS URL Telegram posts updates to, forwarded to host:port "
                                   "(empty: the bot polls)")
    metrics_port: int = setting(0, "port on --host where the bot answers Prometheus' GET /metrics (0: none)",
                                min=0, max=65535)


@dataclass(frozen=True)
class AnswersConfig:
    log: str = setting("", "append one JSON line per answered photo to this file (serve, bot, query): time, "
                           "gallery, status, latency, best matches; never the photo, a path, a chat id or an "
                           "address (empty: no answer log)")
    log_max_bytes: int = setting(100_000_000, "start a new answer log when it would grow over this many bytes "
                                              "(the full one becomes FILE.1, the older ones FILE.2...)",
                                 min=1000)
    log_backups: int = setting(10, "full answer logs kept (FILE.1 ... FILE.N); older ones are removed",
                               min=1, max=10_000)


@dataclass(frozen=True)
class Config:
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    bot: BotConfig = field(default_factory=BotConfig)
    answers: AnswersConfig = field(default_factory=AnswersConfig)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


def section_fields(section: str) -> tuple[dataclasses.Field, ...]:
    """The fields (keys) of one config section."""
    return dataclasses.fields(SECTIONS[section])


def field_type(f: dataclasses.Field) -> type:
    """The Python type of a config field (annotations are strings here)."""
    return f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str, "bool": bool}[f.type]


def choices_of(section: type, key: str) -> tuple[str, ...]:
    """The allowed values of a choice setting."""
    return next(f.metadata["choices"] for f in dataclasses.fields(section) if f.name == key)


def _check_value(where: str, f: dataclasses.Field, value: Any) -> Any:
    kind = field_type(f)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is float and isinstance(value, float) and not math.isfinite(value):
        raise LookalikeError(f"config key {where} must be a finite number, got {value!r}")
    if kind in (int, float) and number and abs(value) > MAX_NUMBER:  # said in the setting's own range
        low = -MAX_NUMBER if f.metadata["min"] is None else f.metadata["min"]
        high = MAX_NUMBER if f.metadata["max"] is None else f.metadata["max"]
        raise LookalikeError(f"config key {where} must be between {low} and {high}, got {value!r}")
    if kind is float and number:
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise LookalikeError(f"config key {where} must be {kind.__name__}, got {value!r}")
    meta = f.metadata
    if meta["several"]:
        unknown = [word for word in value.split() if word not in meta["choices"]]
        if unknown or not value.split():
            raise LookalikeError(f"config key {where} must list some of {', '.join(meta['choices'])}, "
                                 f"got {value!r}")
    elif meta["choices"] and value not in meta["choices"]:
        raise LookalikeError(f"config key {where} must be one of {', '.join(meta['choices'])}, got {value!r}")
    if meta["check"] is not None and (problem := meta["check"](value)):
        raise LookalikeError(f"config key {where} {problem}")
    if meta["min"] is not None and value < meta["min"]:
        raise LookalikeError(f"config key {where} must be at least {meta['min']}, got {value!r}")
    if meta["max"] is not None and value > meta["max"]:
        raise LookalikeError(f"config key {where} must be at most {meta['max']}, got {value!r}")
    return value


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a nested dict (as read from TOML) into a Config; errors name the offending key."""
    sections = {}
    for name, values in data.items():
        if name not in SECTIONS:
            raise LookalikeError(f"{source}: unknown section [{name}] (known: {', '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise LookalikeError(f"{source}: [{name}] must be a table of keys")
        fields = {f.name: f for f in section_fields(name)}
        checked = {}
        for key, value in values.items():
            if key not in fields:
                raise LookalikeError(f"{source}: unknown key {name}.{key} (known: {', '.join(fields)})")
            checked[key] = _check_value(f"{name}.{key}", fields[key], value)
        sections[name] = SECTIONS[name](**checked)
    return Config(**sections)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a TOML config (defaults when ``path`` is None), then apply command-line ``overrides``.

    ``overrides`` maps option names (``max_tilt``) to values; None means "not given".
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(read_regular(path, MAX_CONFIG_BYTES).decode("utf-8"))
        except FileNotFoundError:
            raise LookalikeError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise LookalikeError(f"config file {path} cannot be read: {reason(exc)}") from None
        except RecursionError:
            raise LookalikeError(f"config file {path} cannot be read: it is nested too deeply") from None
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section = section_of(key)
        data.setdefault(section, {})[key] = value
    return config_from_dict(data, source)


def section_of(key: str) -> str:
    """The section that holds a key (key names are unique across sections)."""
    for name in SECTIONS:
        if any(f.name == key for f in section_fields(name)):
            return name
    raise KeyError(key)


def _allowed(f: dataclasses.Field) -> str:
    meta = f.metadata
    if meta["choices"]:
        return ("some of " if meta["several"] else "one of ") + ", ".join(meta["choices"])
    return "; ".join(part for part in (f">= {meta['min']:g}" if meta["min"] is not None else "",
                                       f"<= {meta['max']:g}" if meta["max"] is not None else "") if part)


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def default_toml() -> str:
    """The text of ``configs/default.toml``: every key with its help, range and default."""
    lines = ["# lookalike's settings. Every key is also an option of the commands that use its section",
             "# (filter.max_tilt is --max-tilt); options given on the command line override this file.",
             "# Use another file with --config FILE or LOOKALIKE_CONFIG=FILE. These are the built-in defaults.",
             "# Generated from lookalike_cli/config.py by `make docs`: edit that file, not this one."]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for f in section_fields(section):
            allowed = _allowed(f)
            lines.append(f"# {f.metadata['help']}" + (f" ({allowed})" if allowed else ""))
            lines.append(f"{f.name} = {_toml_value(f.default)}")
    return "\n".join(lines) + "\n"


def settings_table() -> str:
    """The table of every setting (Markdown), for docs/settings.md."""
    lines = ["| key | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for section in SECTIONS:
        for f in section_fields(section):
            default = f"`{_toml_value(f.default)}`"
            lines.append(f"| `{section}.{f.name}` | {default} | {_allowed(f)} | {f.metadata['help']} |")
    return "\n".join(lines) + "\n"
