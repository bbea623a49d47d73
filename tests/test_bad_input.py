"""Bad input of every kind gets one clear line and a non-zero exit, never a traceback, and loses nothing.

The cases below are also the tables of docs/operations.md, which `make docs` (tools/write_docs.py) writes from them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from lookalike_cli.cli import cli
from lookalike_cli.config import load_config
from lookalike_cli.stages.embed import embed_faces
from lookalike_cli.imaging.gallery import printable_path

import hostile
from conftest import DEMO, FAST, FIXTURES, corrupt_png, encoded, side_by_side

PHOTO = DEMO / "images" / "ami-bera.jpg"


@dataclass(frozen=True)
class Case:
    when: str                       # the docs' "when" column
    says: str                       # a part of the one-line error, and the docs' second column
    args: list[str]                 # the command; {data}, {tmp} and {photo} are filled in
    setup: Callable[[Path, Path], None] = lambda data, tmp: None  # prepares a copy of a built data dir


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def catalog_case(when: str, says: str, content: str) -> Case:
    return Case(when, says, ["filter", "--images", str(DEMO / "images"), "--catalog", "{tmp}/catalog.json",
                             "--data-dir", "{tmp}/new"],
                lambda data, tmp: write(tmp / "catalog.json", content))


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def drop_json_key(path: Path, key: str) -> None:
    data = json.loads(path.read_text())
    del data[key]
    path.write_text(json.dumps(data))


def restamp(path: Path, artifact: str) -> None:
    """Rewrite an artifact file with another content id: what a file from another build looks like."""
    from lookalike_cli.io.artifacts import load_table, write_table

    write_table(path, artifact, load_table(path, artifact), {"lookalike.id": "another-build"})


def published(data: Path) -> Path:
    """The folder of a data directory's current generation."""
    return data / "generations" / (data / "generations" / "CURRENT").read_text().strip()


def replace_with_link(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def replace_with_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def replace_with_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_text("not a folder")


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def models_without_cnn(data: Path, tmp: Path) -> None:
    from lookalike_cli.face.model_files import DESCRIPTOR_FILE, LANDMARKS_FILE, models_folder

    (tmp / "models").mkdir()
    for name in (LANDMARKS_FILE, DESCRIPTOR_FILE):
        (tmp / "models" / name).symlink_to(models_folder() / name)


def make_read_only(data: Path, tmp: Path) -> None:
    """Root ignores permission bits, so root makes the folder immutable instead."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(data)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here, and root ignores a read-only mode")
        AFTER.append(lambda: subprocess.run(["chattr", "-i", str(data)], check=True))
    else:
        data.chmod(0o555)
        AFTER.append(lambda: data.chmod(0o755))


def hold_lock(data: Path, tmp: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
         "fcntl.flock(f, fcntl.LOCK_EX); f.seek(0); f.truncate(); f.write('pid 4242 (lookalike build)'); "
         "f.flush(); print('locked', flush=True); time.sleep(60)", str(data / ".lock")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    AFTER.append(lambda: (holder.kill(), holder.wait()))


def models_with_descriptor(change: Callable[[bytes], bytes]) -> Callable[[Path, Path], None]:
    """A --models-dir at {tmp}/models: dlib's landmarks, and its descriptor model's bytes changed by ``change``."""
    def setup(data: Path, tmp: Path) -> None:
        from lookalike_cli.face.model_files import DESCRIPTOR_FILE, LANDMARKS_FILE, models_folder

        (tmp / "models").mkdir()
        shutil.copy(models_folder() / LANDMARKS_FILE, tmp / "models")
        (tmp / "models" / DESCRIPTOR_FILE).write_bytes(change((models_folder() / DESCRIPTOR_FILE).read_bytes()))
    return setup


def without_ray(data: Path, tmp: Path) -> None:
    """As if Ray were not installed: ``import ray`` fails."""
    saved = sys.modules.get("ray")
    sys.modules["ray"] = None  # type: ignore[assignment]
    AFTER.append(lambda: sys.modules.__setitem__("ray", saved) if saved else sys.modules.pop("ray"))


AFTER: list[Callable[[], object]] = []  # undoes what a setup did, after the case

QUERY = ["query", "{photo}", "--data-dir", "{data}"]
EMBED = ["embed", "--data-dir", "{data}", "--models-dir", "{tmp}/models"]
BUILD = ["build", "--images", str(DEMO / "images"), "--data-dir", "{data}", "--num-jitters", "1"]

CASES = [
    Case("query before anything was built", "does not exist: run `lookalike build` first",
         ["query", "{photo}", "--data-dir", "{tmp}/nothing"]),
    Case("query after `filter` only", "CURRENT does not exist: run `lookalike index", QUERY,
         lambda data, tmp: shutil.rmtree(data / "generations")),
    Case("the images folder does not exist", "images folder", ["build", "--images", "{tmp}/no-such-folder",
                                                               "--data-dir", "{data}"]),
    catalog_case("the catalog is not JSON", "is not valid JSON", "name,alias\nAnn,ann\n"),
    catalog_case("the catalog is not a list", "must be a JSON list of people", '{"alias": "ann"}'),
    catalog_case("a catalog entry has no alias", "entry 1 has no alias", '[{"alias": "a"}, {"name": "B"}]'),
    catalog_case("a catalog alias would escape the images folder", "alias '../x' starts with a dot",
                 '[{"alias": "../x"}]'),
    catalog_case("a catalog alias holds a slash", "contains '/'", '[{"alias": "a/b"}]'),
    catalog_case("two catalog entries share an alias", "entry 1: alias 'a' is already used by entry 0",
                 '[{"alias": "a"}, {"alias": "a"}]'),
    catalog_case("a catalog field has the wrong type", "n_movies must be int", '[{"alias": "a", "n_movies": "2"}]'),
    Case("the data directory is a file", "is a file",
         ["build", "--images", str(DEMO / "images"), "--data-dir", "{tmp}/file"],
         lambda data, tmp: write(tmp / "file", "x")),
    Case("the data directory is read-only", "cannot use data directory", BUILD + ["--max-tilt", "20"], make_read_only),
    Case("another build holds the data directory", "is in use by pid 4242 (lookalike build)", BUILD, hold_lock),
    Case("an artifact is truncated", "gallery.parquet is damaged", QUERY,
         lambda data, tmp: truncate(published(data) / "gallery.parquet")),
    Case("an artifact comes from another lookalike version", "was written by another version of lookalike",
         QUERY, lambda data, tmp: edit_json(published(data) / "index.json", schema_version=999)),
    Case("the gallery is older than the embeddings", "gallery.parquet is older than", ["calibrate", "--data-dir",
                                                                                       "{data}"],
         lambda data, tmp: embed_faces(data, load_config(None, FAST))),
    Case("the index was built with another model", "was built with model other-model", QUERY,
         lambda data, tmp: edit_json(published(data) / "index.json",
                                     embed_key="model=other-model;num_jitters=1;descriptor=dlib")),
    Case("--models-dir lacks dlib's files", "lacks shape_predictor_5_face_landmarks.dat",
         ["query", "{photo}", "--data-dir", "{data}", "--models-dir", "{tmp}"]),
    Case("`--descriptor-backend numpy` and the descriptor model is not dlib's network",
         "not dlib's face recognition network", EMBED + ["--descriptor-backend", "numpy"],
         models_with_descriptor(lambda model: model + b"more")),
    Case("the descriptor model is damaged", "cannot load dlib models from", EMBED,
         models_with_descriptor(lambda model: model[:1000])),
    Case("--models-dir lacks the CNN detector of the detection fallback", "lacks mmod_human_face_detector.dat",
         ["query", "{photo}", "--data-dir", "{data}", "--models-dir", "{tmp}/models"], models_without_cnn),
    Case("an eval degradation is unknown", "unknown step 'sharpen'",
         ["eval", "--images", str(DEMO / "images"), "--degrade", "sharpen:2", "--out", "{tmp}/eval"]),
    Case("the config has an unknown key", "unknown key filter.max_tilte", ["query", "{photo}", "--data-dir",
                                                                          "{data}", "--config", "{tmp}/c.toml"],
         lambda data, tmp: write(tmp / "c.toml", "[filter]\nmax_tilte = 3\n")),
    Case("a config value has the wrong type", "filter.max_tilt must be float", BUILD + ["--config", "{tmp}/c.toml"],
         lambda data, tmp: write(tmp / "c.toml", '[filter]\nmax_tilt = "flat"\n')),
    Case("the config is a device like /dev/zero", "config file /dev/zero cannot be read: not a regular file",
         QUERY + ["--config", "/dev/zero"]),
    Case("the config is not UTF-8", "c.toml cannot be read: 'utf-8' codec can't decode", QUERY + ["--config",
                                                                                              "{tmp}/c.toml"],
         lambda data, tmp: (tmp / "c.toml").write_bytes(b"[filter]\nmax_tilt = 3  # \xff\n")),
    Case("the catalog is a device like /dev/zero", "catalog /dev/zero cannot be read: not a regular file",
         ["filter", "--images", str(DEMO / "images"), "--catalog", "/dev/zero", "--data-dir", "{tmp}/new"]),
    catalog_case("the catalog's JSON is nested 100,000 deep", "its JSON is nested too deeply",
                 "[" * 100_000 + "]" * 100_000),
    Case("the URL list is a device like /dev/zero", "URL list /dev/zero cannot be read: not a regular file",
         ["crawl", "--catalog", "{tmp}/catalog.json", "--data-dir", "{tmp}/new", "--engine", "urls", "--urls",
          "/dev/zero"], lambda data, tmp: write(tmp / "catalog.json", '[{"alias": "ann"}]')),
    Case("a Parquet URL list is a link to /dev/zero", "urls.parquet cannot be read: not a regular file",
         ["crawl", "--catalog", "{tmp}/catalog.json", "--data-dir", "{tmp}/new", "--engine", "urls", "--urls",
          "{tmp}/urls.parquet"], lambda data, tmp: (write(tmp / "catalog.json", '[{"alias": "ann"}]'),
                                                    (tmp / "urls.parquet").symlink_to("/dev/zero"))),
    Case("the gallery's CURRENT points to /dev/zero", "CURRENT cannot be read (not a regular file)", QUERY,
         lambda data, tmp: replace_with_link(data / "generations" / "CURRENT", Path("/dev/zero"))),
    Case("the gallery's CURRENT names a generation that is not there", "which cannot be read", QUERY,
         lambda data, tmp: (data / "generations" / "CURRENT").write_text("g-gone\n")),
    Case("the current generation is a file", "which cannot be read", QUERY,
         lambda data, tmp: replace_with_file(published(data))),
    Case("the published gallery is a folder", "gallery.parquet is damaged (not a regular file)", QUERY,
         lambda data, tmp: replace_with_folder(published(data) / "gallery.parquet")),
    Case("the published calibration is JSON nested 100,000 deep", "calibration.json is damaged", QUERY,
         lambda data, tmp: write(published(data) / "calibration.json", "[" * 100_000)),
    Case("the gallery's CURRENT is 50 MB", "CURRENT cannot be read (over the limit of 1000 bytes)", QUERY,
         lambda data, tmp: (data / "generations" / "CURRENT").write_bytes(b"g" * 50_000_000)),
    Case("a config value is out of range", "filter.max_tilt must be at most 90", BUILD + ["--max-tilt", "95"]),
    Case("negative jitters", "embed.num_jitters must be at least 1", BUILD + ["--num-jitters", "-2"]),
    Case("a number that is not one", "calibrate.min_similarity must be a finite number, got nan",
         BUILD + ["--min-similarity", "nan"]),
    Case("a timeout past what the OS's timers take", "image.decode_timeout must be at most 86400",
         BUILD + ["--decode-timeout", "3000000"]),
    Case("--executor ray without Ray installed", "--executor ray needs Ray: pip install 'lookalike[ray]'",
         BUILD + ["--executor", "ray"], without_ray),
    Case("--ray-address where no Ray listens", "cannot reach the Ray cluster at 127.0.0.1:1",
         ["build", "--images", str(DEMO / "images"), "--data-dir", "{tmp}/new", "--executor", "ray",
          "--ray-address", "127.0.0.1:1"], lambda data, tmp: pytest.importorskip("ray")),
    Case("the query photo is not an image", "cannot read the image (undecodable",
         ["query", "{tmp}/fake.jpg", "--data-dir", "{data}"],
         lambda data, tmp: write(tmp / "fake.jpg", "<html>not a photo</html>")),
    Case("the query photo does not exist", "cannot read the image (unreadable", ["query", "{tmp}/nope.jpg",
                                                                              "--data-dir", "{data}"]),
    Case("the query photo has no face", "no face found", ["query", str(FIXTURES / "no_face_coffee_cc0.png"),
                                                          "--data-dir", "{data}"]),
    Case("the query photo is a device like /dev/zero", "cannot read the image (unreadable: not a regular file",
         ["query", "/dev/zero", "--data-dir", "{data}"]),
    Case("the query photo is a directory", "cannot read the image (unreadable: not a regular file",
         ["query", "{tmp}", "--data-dir", "{data}"]),
    Case("the query photo is a FIFO nobody writes to", "cannot read the image (unreadable: not a regular file",
         ["query", "{tmp}/fifo.jpg", "--data-dir", "{data}"], lambda data, tmp: os.mkfifo(tmp / "fifo.jpg")),
    Case("--out names a symbolic link", "exists and is not a regular file", QUERY + ["--out", "{tmp}/link.png"],
         lambda data, tmp: (tmp / "link.png").symlink_to(tmp / "target.png")),
    Case("the published calibration has std 0", "calibration.json is damaged ('std' is not a positive value", QUERY,
         lambda data, tmp: edit_json(published(data) / "calibration.json", std=0)),
    Case("the published calibration lacks a key", "calibration.json is damaged (no 'mean')", QUERY,
         lambda data, tmp: drop_json_key(published(data) / "calibration.json", "mean")),
    Case("a calibration value has the wrong type", "calibration.json is damaged ('count' is not a count value", QUERY,
         lambda data, tmp: edit_json(published(data) / "calibration.json", count="many")),
    Case("the published index lists another gallery file", "is not the file", QUERY,
         lambda data, tmp: restamp(published(data) / "gallery.parquet", "gallery")),
    catalog_case("a catalog n_movies is absurd (10**30)", "n_movies must be between 0 and 1000000",
                 '[{"alias": "a", "n_movies": 1000000000000000000000000000000}]'),
    catalog_case("a catalog name holds a newline", "holds a control character", '[{"alias": "a", "name": "A\\nB"}]'),
    catalog_case("a catalog name is a megabyte long", "is longer than 200 characters",
                 json.dumps([{"alias": "a", "name": "x" * 1_000_000}])),
    catalog_case("a catalog alias is a lone surrogate (JSON's \\ud800)", "is not valid Unicode",
                 '[{"alias": "a\\ud800"}]'),
    catalog_case("a catalog name is a lone surrogate", "is not valid Unicode", '[{"alias": "a", "name": "\\udfff"}]'),
    catalog_case("a catalog entry's other keys are a megabyte", "its other keys must be valid Unicode of at most "
                 "10000 bytes as JSON", json.dumps([{"alias": "a", "bio": "x" * 1_000_000}])),
    catalog_case("one alias typed two ways (é, and e with a combining accent)", "is already used by entry 0",
                 json.dumps([{"alias": "jos\u00e9"}, {"alias": "jose\u0301"}])),
    Case("--log names a file in a folder that does not exist", "give a file in an existing folder",
         QUERY + ["--log", "{tmp}/no-such-folder/answers.jsonl"]),
    Case("--log names a folder", "give a file in an existing folder", QUERY + ["--log", "{tmp}"]),
    Case("stats reads an answer log that is a device", "cannot read the answer log /dev/zero: not a regular file",
         ["stats", "--log", "/dev/zero", "--data-dir", "{data}"]),
    Case("stats is given an answer log that does not exist", "cannot read the answer log",
         ["stats", "--log", "{tmp}/none.jsonl", "--data-dir", "{data}"]),
]


@pytest.fixture
def fresh_copy(built, tmp_path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(built, data)
    return data


@pytest.mark.parametrize("case", CASES, ids=[case.when for case in CASES])
def test_bad_input_gets_one_clear_line(case: Case, fresh_copy: Path, tmp_path: Path):
    try:
        case.setup(fresh_copy, tmp_path)
        args = [a.format(data=fresh_copy, tmp=tmp_path, photo=PHOTO) for a in case.args]
        result = CliRunner().invoke(cli, args)
    finally:
        while AFTER:
            AFTER.pop()()
    errors = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert len(errors) == 1 and case.says in errors[0], errors


def test_no_traceback_even_from_a_subprocess(tmp_path):
    """The installed command, not only Click's runner: a real process prints one line."""
    result = subprocess.run([sys.executable, "-m", "lookalike_cli", "query", str(PHOTO), "--data-dir",
                             str(tmp_path / "none")], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# --- Images: what the filter (and query) make of every kind of file a crawl brings in --------------------------

def image_bytes(fmt: str, mode: str = "RGB", **kwargs) -> Callable[[], bytes]:
    def make() -> bytes:
        import io

        from PIL import Image

        image = Image.open(PHOTO).convert("RGB")
        if mode == "I;16":
            image = image.convert("L").convert("I;16")
        elif mode != "RGB":
            image = image.convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kwargs)
        return buffer.getvalue()
    return make


def rotated_with_exif(orientation: int) -> Callable[[], bytes]:
    def make() -> bytes:
        import io

        from PIL import Image

        turn = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
        image = Image.open(PHOTO).convert("RGB").transpose(turn)
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", exif=exif, quality=95)
        return buffer.getvalue()
    return make


def bomb() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    return buffer.getvalue()


def faces_side_by_side() -> bytes:
    return encoded(side_by_side(PHOTO, DEMO / "images" / "bob-corker.jpg"), "JPEG")


def tiny() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(PHOTO).convert("RGB").resize((40, 48)).save(buffer, "PNG")
    return buffer.getvalue()


IMAGE_CASES: list[tuple[str, str, Callable[[], bytes], str]] = [
    ("a 0-byte file", "empty.jpg", lambda: b"", "undecodable"),
    ("an HTML page named .jpg", "page.jpg", lambda: b"<!doctype html><html><body>404</body></html>", "undecodable"),
    ("a truncated JPEG", "truncated.jpg", lambda: PHOTO.read_bytes()[:3000], "undecodable"),
    ("a corrupt PNG", "corrupt.png", corrupt_png, "undecodable"),
    ("a decompression bomb (400 Mpx header)", "bomb.png", bomb, "too_large"),
    ("a tiny image (40x48)", "tiny.png", tiny, "too_small"),
    ("a photo with no face", "coffee.png", lambda: (FIXTURES / "no_face_coffee_cc0.png").read_bytes(), "no_face"),
    ("a photo with two faces", "pair.jpg", faces_side_by_side, "several_faces"),
    ("a CMYK JPEG", "cmyk.jpg", image_bytes("JPEG", "CMYK"), "ok"),
    ("a 16-bit PNG", "sixteen.png", image_bytes("PNG", "I;16"), "ok"),
    ("a palette PNG", "palette.png", image_bytes("PNG", "P"), "ok"),
    ("an RGBA PNG", "rgba.png", image_bytes("PNG", "RGBA"), "ok"),
    ("a grayscale JPEG", "gray.jpg", image_bytes("JPEG", "L"), "ok"),
    ("an animated GIF", "animated.gif", image_bytes("GIF", "P", save_all=True), "ok"),
    ("a WebP", "photo.webp", image_bytes("WEBP"), "ok"),
    ("a JPEG with EXIF orientation 6", "exif6.jpg", rotated_with_exif(6), "ok"),
    ("a JPEG with EXIF orientation 8", "exif8.jpg", rotated_with_exif(8), "ok"),
    ("an EPS file named .jpg", "vector.jpg", hostile.eps, "unsupported_format"),
    ("a TIFF (not in image_formats)", "scan.tif", image_bytes("TIFF"), "unsupported_format"),
    ("a progressive JPEG of 3,000 scans", "scans.jpg", lambda: hostile.repeated_scans_jpeg(600, 3000),
     "too_large"),
    ("an RGBA PNG of 30 Mpx (210 MB to decode)", "huge.png", lambda: hostile.rgba_png(6000, 5000), "too_large"),
]


def fifo(path: Path) -> None:
    os.mkfifo(path)


def non_utf8_folder(path: Path) -> None:
    folder = path.parent.parent / os.fsdecode(b"d\xe9j\xe0")
    folder.mkdir()
    (folder / "1.jpg").write_bytes(PHOTO.read_bytes())


# Entries of the images folder that are not image files: (when, name under the person's folder, maker, detail).
LISTING_CASES: list[tuple[str, str, Callable[[Path], object], str]] = [
    ("a symbolic link out of the images folder", "link.jpg",
     lambda path: path.symlink_to(path.parent.parent.parent / "outside.jpg"),
     "symbolic link points outside the images folder"),
    ("a symbolic link loop", "loop.jpg", lambda path: path.symlink_to(path), "symbolic link loop"),
    ("a broken symbolic link", "broken.jpg", lambda path: path.symlink_to(path.parent / "gone.jpg"),
     "broken symbolic link"),
    ("a file name that is not UTF-8", os.fsdecode(b"caf\xe9.jpg"), lambda path: path.write_bytes(PHOTO.read_bytes()),
     "file name is not valid UTF-8"),
    ("a folder name that is not UTF-8", "1.jpg", non_utf8_folder, "folder name is not valid UTF-8"),
    ("a FIFO named .jpg", "fifo.jpg", fifo, "not a regular file"),
    ("a folder named .jpg", "folder.jpg", lambda path: path.mkdir(), "not a regular file"),
]


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory) -> Path:
    """A gallery where one person's folder holds every kind of file, plus links and odd names."""
    images = tmp_path_factory.mktemp("bad") / "images"
    person = images / "ami-bera"
    person.mkdir(parents=True)
    for _, name, make, _ in IMAGE_CASES:
        (person / name).write_bytes(make())
    (images.parent / "outside.jpg").write_bytes(PHOTO.read_bytes())
    for _, name, make, _ in LISTING_CASES:
        make(person / name)
    shutil.copy(DEMO / "images" / "bob-corker.jpg", images)
    return images


def test_every_kind_of_file_gets_its_reason(bad_images, tmp_path):
    import pyarrow.parquet as pq

    result = CliRunner().invoke(cli, ["build", "--images", str(bad_images), "--data-dir", str(tmp_path / "d"),
                                      "--num-jitters", "1", "--workers", "2"])
    assert result.exit_code == 0, result.output
    rows = {row["path"].removeprefix(str(bad_images) + "/"): row
            for row in pq.read_table(tmp_path / "d" / "filter.parquet").to_pylist()}
    for when, name, _, reason in IMAGE_CASES:
        assert rows[f"ami-bera/{name}"]["reason"] == reason, (when, rows[f"ami-bera/{name}"])
    for when, name, _, detail in LISTING_CASES:
        row = next(row for path, row in rows.items() if path.endswith(printable_path(Path(name))) and
                   ("UTF-8" in detail) == ("\\x" in path))
        assert (row["reason"], row["detail"]) == ("bad_file", detail), when
    assert "Traceback" not in result.output


@pytest.mark.parametrize("when, name, reason", [(w, n, r) for w, n, _, r in IMAGE_CASES],
                         ids=[case[0] for case in IMAGE_CASES])
def test_query_answers_every_kind_of_file(built, bad_images, when, name, reason):
    result = CliRunner().invoke(cli, ["query", str(bad_images / "ami-bera" / name), "--data-dir", str(built)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    if reason in ("ok", "several_faces", "too_small"):  # a face too small for the gallery: the fallback finds it
        assert result.exit_code == 0 and "Ami Bera" in lines[0], (when, lines)
    else:
        expected = "no face found" if reason == "no_face" else f"cannot read the image ({reason}"
        assert result.exit_code == 1 and len(lines) == 1 and expected in lines[0], (when, lines)


@pytest.mark.slow
def test_a_photo_over_the_decode_timeout_is_recorded_and_the_build_goes_on(tmp_path):
    import pyarrow.parquet as pq

    images = tmp_path / "images"
    images.mkdir()
    for alias in ("ami-bera", "bob-corker", "barack-obama", "aaron-schock"):
        shutil.copy(DEMO / "images" / f"{alias}.jpg", images)
    (images / "slow.jpg").write_bytes(hostile.slow_jpeg())  # within every bound; half a second of decoding
    result = CliRunner().invoke(cli, ["build", "--images", str(images), "--data-dir", str(tmp_path / "d"),
                                      "--num-jitters", "1", "--workers", "1",
                                      "--decode-timeout", str(hostile.DECODE_TIMEOUT)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "filter: 4 of 5 images accepted" in result.output and "rejected timeout: 1" in result.output
    rows = {Path(row["path"]).name: row for row in pq.read_table(tmp_path / "d" / "filter.parquet").to_pylist()}
    assert (rows["slow.jpg"]["reason"], rows["slow.jpg"]["detail"]) == ("timeout", hostile.DECODE_TIMED_OUT)
    assert "index: exact over 4 vectors" in result.output

