"""`lookalike crawl` against a real HTTP server on 127.0.0.1 (tests/crawl_server.py), no internet: icrawler's
Bing and Baidu feeders and parsers, the verifying downloader, the manifest, resuming after a kill, and the
crawl -> build -> query chain of `make pipeline`."""

import base64
import contextlib
import functools
import io
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from lookalike_cli.crawl import download

from lookalike_cli.io import syncing
from lookalike_cli.config import CrawlConfig, choices_of, load_config
from lookalike_cli.crawl.run import crawl, download_policy
from lookalike_cli.crawl.download import DownloadFailed, non_public_kind, verified_image
from lookalike_cli.imaging.gallery import list_gallery, sha256_of
from lookalike_cli.imaging.decode import verify_image
from lookalike_cli.crawl.manifest import manifest_row, retryable
from lookalike_cli.crawl.sources import SOURCES, rehost

import hostile
from conftest import DEMO, REPO, run
from crawl_server import BAD_STATUSES, CrawlServer, baidu_encode, demo_photo, synthetic_world

PEOPLE = json.loads((DEMO / "catalog.json").read_text())[:4]  # the 4th is Beto O’Rourke: a non-ASCII query


def png_of_mirrored(alias: str) -> bytes:
    buffer = io.BytesIO()
    ImageOps.mirror(Image.open(DEMO / "images" / f"{alias}.jpg")).save(buffer, "PNG")
    return buffer.getvalue()


def photo_files(aliases) -> dict:
    """Each person's demo JPEG, and a mirrored copy as PNG behind a .jpg name and an image/jpeg header."""
    files = {}
    for alias in aliases:
        files[f"/img/{alias}.jpg"] = (demo_photo(alias), "image/jpeg")
        files[f"/img/{alias}-mirror.jpg"] = (png_of_mirrored(alias), "image/jpeg")
    return files


def write_catalog(folder: Path, people) -> Path:
    path = folder / "catalog.json"
    path.write_text(json.dumps(people, ensure_ascii=False))
    return path


def write_url_list(path: Path, rows) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.table({"alias": [a for a, _ in rows], "url": [u for _, u in rows]}), path)
    else:
        path.write_text("alias,url\n" + "".join(f"{alias},{url}\n" for alias, url in rows))
    return path


def manifest(data: Path) -> list[dict]:
    return pq.read_table(data / "crawl.parquet").to_pylist()


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def settings(**values):
    """Crawl settings for the local server: on 127.0.0.1, so its addresses are allowed."""
    return load_config(None, {"download_timeout": 2.0, "allow_private_addresses": True} | values)


# --- pure helpers


def test_the_engine_setting_offers_exactly_the_registered_sources():
    assert choices_of(CrawlConfig, "engine") == tuple(SOURCES)


def test_rehost_keeps_path_and_query():
    assert rehost("https://www.bing.com/images/async?q=a+b&first=0", "http://127.0.0.1:8000") == \
        "http://127.0.0.1:8000/images/async?q=a+b&first=0"


@pytest.mark.parametrize("status, http_status, again", [
    ("timeout", None, True), ("connection_error", None, True), ("search_error", 503, True),
    ("http_error", 503, True), ("http_error", 429, True), ("http_error", 404, False), ("ok", 200, False),
    ("not_image", 200, False), ("too_large", 200, False),
])
def test_only_failures_that_may_pass_are_retried(status, http_status, again):
    assert retryable(manifest_row("a", "q", "http://x/y.jpg", status, http_status=http_status)) is again


def test_the_extension_comes_from_the_decoded_format():
    config = load_config()
    verify = functools.partial(verify_image, policy=download_policy(config))
    assert verified_image(png_of_mirrored("ami-bera"), config.crawl, verify) == ("png", 225, 275)
    assert verified_image(demo_photo("ami-bera"), config.crawl, verify)[0] == "jpg"
    with pytest.raises(DownloadFailed) as rejected:
        verified_image(b"GIF89a not really", config.crawl, verify)
    assert rejected.value.reason == "not_image"


def test_a_photo_that_decodes_too_slowly_is_a_timeout_row_and_the_crawl_goes_on(tmp_path):
    """A progressive JPEG whose last scan repeats: half a second of decoding in 200 kB. The crawl's verifier
    stops it at --decode-timeout (its process is killed and replaced) and keeps the next photo."""
    slow = hostile.slow_jpeg()
    files = photo_files(["ami-bera"]) | {"/slow-decode.jpg": (slow, "image/jpeg")}
    with CrawlServer(files=files) as server:
        urls = tmp_path / "urls.csv"
        urls.write_text(f"alias,url\nami-bera,{server.url}/slow-decode.jpg\nami-bera,{server.url}/img/ami-bera.jpg\n")
        catalog = tmp_path / "catalog.json"
        catalog.write_text(json.dumps([{"alias": "ami-bera", "name": "Ami Bera"}]))
        crawl(catalog, tmp_path / "data", settings(engine="urls", per_person=1, decode_timeout=hostile.DECODE_TIMEOUT),
              urls=urls)
    rows = {row["url"].rsplit("/", 1)[1]: row for row in pq.read_table(tmp_path / "data" / "crawl.parquet").to_pylist()}
    assert (rows["slow-decode.jpg"]["status"], rows["slow-decode.jpg"]["error"]) == ("timeout",
                                                                                  hostile.DECODE_TIMED_OUT)
    assert rows["ami-bera.jpg"]["status"] == "ok"


def test_the_server_ciphers_baidu_urls_as_icrawler_deciphers_them():
    from icrawler.builtin.baidu import BaiduParser
    from icrawler.utils import Signal

    url = "http://127.0.0.1:4321/img/beto-orourke_2.jpg?x=1"
    assert BaiduParser(1, Signal(), None)._decode_url(baidu_encode(url)) == url


# --- downloads: every bad case gets its status, only images are kept


@pytest.mark.parametrize("list_format", ["csv", "parquet"])
@pytest.mark.slow
def test_bad_responses_get_their_status_and_only_verified_images_are_kept(tmp_path, list_format):
    alias = "aaron-schock"
    files = photo_files([alias]) | {"/img/copy.jpg": (demo_photo(alias), "image/jpeg")}
    with CrawlServer(files=files, drip_seconds=4.0) as server:
        paths = list(BAD_STATUSES) + [f"/img/{alias}.jpg", "/img/copy.jpg", f"/img/{alias}-mirror.jpg",
                                      "/gzipped.jpg"]
        urls = write_url_list(tmp_path / f"urls.{list_format}", [(alias, server.url + path) for path in paths])
        config = settings(engine="urls", per_person=10, download_timeout=1.0, max_download_bytes=300_000)
        summary = crawl(write_catalog(tmp_path, PEOPLE[:1]), tmp_path / "data", config, urls=urls)

    rows = {row["url"].removeprefix(server.url): row for row in manifest(tmp_path / "data")}
    expected = BAD_STATUSES | {f"/img/{alias}.jpg": "ok", "/img/copy.jpg": "duplicate",
                               f"/img/{alias}-mirror.jpg": "ok", "/gzipped.jpg": "duplicate"}
    assert {path: row["status"] for path, row in rows.items()} == expected
    assert rows["/bad/missing.jpg"]["http_status"] == 404 and rows["/bad/error.jpg"]["http_status"] == 500
    assert rows["/bad/slow.jpg"]["seconds"] < 2.0  # the total deadline, not a timeout per read
    jpeg, png = rows[f"/img/{alias}.jpg"], rows[f"/img/{alias}-mirror.jpg"]
    assert rows["/img/copy.jpg"]["path"] == rows["/gzipped.jpg"]["path"] == jpeg["path"]
    assert png["path"].endswith(".png") and (png["width"], png["height"]) == (225, 275)
    kept = files_under(tmp_path / "data" / "images")
    assert kept == {f"{alias}/{jpeg['sha256']}.jpg", f"{alias}/{png['sha256']}.png"}
    for name in kept:
        assert sha256_of(tmp_path / "data" / "images" / name) == Path(name).stem
    assert (summary.complete, summary.partial, summary.empty) == (0, 1, 0)
    assert summary.statuses["ok"] == 2 and summary.statuses["http_error"] == 2
    assert not (tmp_path / "data" / "parts").exists()


# --- one deadline per URL: connecting, headers and body


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", folder / "key.pem", "-out",
                    folder / "cert.pem"], check=True, capture_output=True)
    return folder / "cert.pem", folder / "key.pem"


@contextlib.contextmanager
def unanswered_port():
    """A port of 127.0.0.1 whose connections never complete: its listen queue is full."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
        try:
            yield listener.getsockname()[1]
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.slow
def test_one_deadline_covers_connecting_headers_and_body(tmp_path, monkeypatch, tls_files, scheme):
    """Headers or a body dripped a byte every 0.1 s for 6 s, and a connection that is never accepted, each
    end at the 1 s deadline (requests' timeouts are per read: each would take 6 s or more)."""
    alias = "aaron-schock"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files[0]))
    with CrawlServer(files=photo_files([alias]), drip_seconds=6.0, tls=tls_files if scheme == "https" else None) \
            as server, unanswered_port() as port:
        paths = ["/bad/slow-headers.jpg", "/bad/slow.jpg", f"/img/{alias}.jpg"]
        urls = [server.url + path for path in paths] + [f"{scheme}://127.0.0.1:{port}/never.jpg"]
        url_list = write_url_list(tmp_path / "urls.csv", [(alias, url) for url in urls])
        config = settings(engine="urls", per_person=5, download_timeout=1.0)
        crawl(write_catalog(tmp_path, PEOPLE[:1]), tmp_path / "data", config, urls=url_list)

    rows = {row["url"]: row for row in manifest(tmp_path / "data")}
    assert [rows[url]["status"] for url in urls] == ["timeout", "timeout", "ok", "timeout"]
    for url in (urls[0], urls[1], urls[3]):
        assert 1.0 <= rows[url]["seconds"] < 2.0, rows[url]  # the deadline, with a generous margin


# --- search result pages: capped in bytes and time


@pytest.mark.parametrize("kind, error", [
    ("announced-huge", "too_large: 1500000000 bytes announced, over the limit of 1000000"),
    ("endless", "too_large: over the limit of 1000000 bytes"),
    ("slow-headers", "timeout: no complete answer within 1 s"),
])
@pytest.mark.slow
def test_a_hostile_search_page_is_a_search_error_with_its_reason(tmp_path, kind, error):
    person = PEOPLE[0]
    catalog = write_catalog(tmp_path, [person])
    with CrawlServer(pages={person["name"]: kind}, drip_seconds=6.0) as server:
        config = settings(search_host=server.url, per_person=1, download_timeout=1.0,
                          max_search_page_bytes=1_000_000)
        summary = crawl(catalog, tmp_path / "data", config)
    assert (summary.empty, summary.statuses) == (1, {"search_error": 1})
    [row] = manifest(tmp_path / "data")
    assert row["status"] == "search_error" and row["error"] == error
    assert row["seconds"] < 2.0  # read no further than the cap, or the deadline


# --- addresses: URLs from web search may not reach the crawler's own networks


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("::1", False),
    ("::ffff:127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("100.64.0.1", False), ("169.254.169.254", False), ("fe80::1", False), ("fc00::1", False),
    ("224.0.0.1", False), ("ff02::1", False), ("0.0.0.0", False), ("::", False), ("240.0.0.1", False),
])
def test_only_public_addresses_count_as_public(address, public):
    assert (non_public_kind(address) is None) is public


def test_search_results_on_private_addresses_are_blocked_unless_allowed(tmp_path):
    person = PEOPLE[0]
    catalog = write_catalog(tmp_path, [person])
    with CrawlServer(files=photo_files([person["alias"]])) as server:
        port = urlsplit(server.url).port
        server.results = {person["name"]: [f"http://localhost:{port}/img/{person['alias']}.jpg",
                                           f"http://127.0.0.1:{port}/img/{person['alias']}-mirror.jpg"]}
        blocked = crawl(catalog, tmp_path / "blocked", settings(search_host=server.url, allow_private_addresses=False))
        assert not [path for path in server.hits if path.startswith("/img/")]  # never connected to
        allowed = crawl(catalog, tmp_path / "allowed", settings(search_host=server.url, per_person=2))
    assert blocked.statuses == {"blocked_address": 2} and allowed.statuses == {"ok": 2}
    errors = [row["error"] for row in manifest(tmp_path / "blocked")]
    assert errors[0].startswith("localhost is at ") and "loopback" in errors[0]
    assert errors[1] == "127.0.0.1 is at 127.0.0.1, a loopback address (allow with --allow-private-addresses)"


def test_a_redirect_to_a_private_address_is_blocked(tmp_path, monkeypatch):
    """Every hop is checked where it connects. Here 127.0.0.1 stands for a public host (the only test seam: all
    of the test's servers are on loopback), and it redirects to 127.0.0.2."""
    def public_but_for_the_first_server(address):
        return None if address == "127.0.0.1" else non_public_kind(address)

    monkeypatch.setattr(download, "non_public_kind", public_but_for_the_first_server)
    person = PEOPLE[0]
    catalog = write_catalog(tmp_path, [person])
    with CrawlServer(files=photo_files([person["alias"]]), host="127.0.0.2") as inner, CrawlServer() as outer:
        target = f"{inner.url}/img/{person['alias']}.jpg"
        outer.results = {person["name"]: [f"/redirect?to={target}"]}
        summary = crawl(catalog, tmp_path / "data", settings(search_host=outer.url, allow_private_addresses=False))
        assert outer.hits["/redirect"] == 1 and not inner.hits
    [row] = manifest(tmp_path / "data")
    assert summary.statuses == {"blocked_address": 1}
    assert row["error"].startswith("127.0.0.2 is at 127.0.0.2, a loopback address")


# --- what is stored and logged


def test_credentials_are_used_but_never_stored_or_logged(tmp_path, caplog):
    alias = "aaron-schock"
    with CrawlServer(files=photo_files([alias])) as server:
        with_password = server.url.replace("//", "//ann:s3cret@")
        paths = [f"/img/{alias}.jpg", "/bad/missing.jpg", "/bad/html.jpg"]
        urls = write_url_list(tmp_path / "urls.csv", [(alias, with_password + path) for path in paths])
        with caplog.at_level(logging.DEBUG):
            crawl(write_catalog(tmp_path, PEOPLE[:1]), tmp_path / "data", settings(engine="urls"), urls=urls)
        assert server.authorization[f"/img/{alias}.jpg"] == "Basic " + base64.b64encode(b"ann:s3cret").decode()

    rows = manifest(tmp_path / "data")
    assert sorted(row["url"] for row in rows) == sorted(server.url + path for path in paths)
    assert sorted(row["status"] for row in rows) == ["http_error", "not_image", "ok"]
    assert b"s3cret" not in (tmp_path / "data" / "crawl.parquet").read_bytes()
    assert caplog.records and "s3cret" not in caplog.text


def test_a_url_list_with_a_byte_order_mark_is_read(tmp_path):
    alias = "aaron-schock"
    with CrawlServer(files=photo_files([alias])) as server:
        urls = tmp_path / "urls.csv"
        urls.write_text(f"alias,url\r\n{alias},{server.url}/img/{alias}.jpg\r\n", encoding="utf-8-sig")
        assert urls.read_bytes().startswith(b"\xef\xbb\xbfalias")  # as spreadsheet programs save it
        summary = crawl(write_catalog(tmp_path, PEOPLE[:1]), tmp_path / "data", settings(engine="urls",
                                                                                          per_person=1), urls=urls)
    assert summary.statuses == {"ok": 1}


def test_the_sync_helper_answers_each_list_of_paths(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"bytes")
    lists = [[str(tmp_path / "photo.jpg"), str(tmp_path)], [str(tmp_path / "missing.jpg")]]
    requests = "".join(json.dumps(paths) + "\n" for paths in lists)
    done = subprocess.run([sys.executable, syncing.__file__], input=requests, capture_output=True, text=True,
                          timeout=60)
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        "ok", f"cannot sync {tmp_path / 'missing.jpg'}: No such file or directory"]
    assert done.returncode == 0


# --- search engines: icrawler's real feeders and parsers, pointed at the local server


@pytest.mark.parametrize("engine", ["bing", "baidu"])
def test_search_engines_through_the_local_server_and_a_rerun_downloads_nothing(tmp_path, engine):
    aliases = [person["alias"] for person in PEOPLE]
    # per person: a dead link, the photo, its mirrored PNG, and one more that is never needed
    results = {f"{person['name']} portrait": ["/bad/missing.jpg", f"/img/{person['alias']}.jpg",
                                              f"/img/{person['alias']}-mirror.jpg", "/img/never-needed.jpg"]
               for person in PEOPLE}
    files = photo_files(aliases) | {"/img/never-needed.jpg": (demo_photo("ron-paul"), "image/jpeg")}
    catalog = write_catalog(tmp_path, PEOPLE)
    with CrawlServer(results, files) as server:
        config = settings(engine=engine, search_host=server.url, query_suffix="portrait", per_person=2)
        summary = crawl(catalog, tmp_path / "data", config)
        first_hits = dict(server.hits)
        again = crawl(catalog, tmp_path / "data", config)
        assert dict(server.hits) == first_hits  # nothing searched or downloaded again

    assert (summary.complete, summary.people) == (4, 4)
    assert (again.already_complete, again.statuses) == (4, {})
    page = "/images/async" if engine == "bing" else "/search/acjson"
    assert first_hits[page] == 4 and first_hits["/bad/missing.jpg"] == 4
    assert "/img/never-needed.jpg" not in first_hits
    gallery = list_gallery(tmp_path / "data" / "images")
    assert sorted({image.alias for image in gallery}) == sorted(aliases)
    assert sorted(Path(image.path).suffix for image in gallery) == [".jpg"] * 4 + [".png"] * 4
    rows = manifest(tmp_path / "data")
    assert {row["query"] for row in rows} == set(results)
    assert len(rows) == 12


def test_a_failed_search_is_recorded_and_retried(tmp_path):
    catalog = write_catalog(tmp_path, PEOPLE[:1])
    person = PEOPLE[0]
    with CrawlServer() as down:
        url = down.url
    summary = crawl(catalog, tmp_path / "data", settings(search_host=url, per_person=1))
    assert (summary.empty, summary.statuses) == (1, {"search_error": 1})
    [row] = manifest(tmp_path / "data")
    assert row["status"] == "search_error" and row["error"].startswith("connection_error: ")

    with CrawlServer({person["name"]: [f"/img/{person['alias']}.jpg"]}, photo_files([person["alias"]])) as server:
        summary = crawl(catalog, tmp_path / "data", settings(search_host=server.url, per_person=1))
    assert (summary.complete, summary.statuses) == (1, {"ok": 1})
    assert [row["status"] for row in manifest(tmp_path / "data")] == ["ok"]


def test_a_rerun_retries_only_what_may_pass(tmp_path):
    alias = "ami-bera"
    catalog = write_catalog(tmp_path, [p for p in PEOPLE if p["alias"] == alias])
    with CrawlServer(files=photo_files([alias])) as server:
        paths = ["/bad/flaky.jpg", "/bad/missing.jpg", f"/img/{alias}.jpg"]  # flaky: 503 once, then a photo
        urls = write_url_list(tmp_path / "urls.csv", [(alias, server.url + path) for path in paths])
        config = settings(engine="urls", per_person=2)
        first = crawl(catalog, tmp_path / "data", config, urls=urls)
        second = crawl(catalog, tmp_path / "data", config, urls=urls)
        hits = dict(server.hits)
    assert (first.partial, first.statuses) == (1, {"http_error": 2, "ok": 1})
    assert (second.complete, second.statuses) == (1, {"ok": 1})
    assert hits == {"/bad/flaky.jpg": 2, "/bad/missing.jpg": 1, f"/img/{alias}.jpg": 1}
    rows = manifest(tmp_path / "data")
    assert sorted(row["status"] for row in rows) == ["http_error", "ok", "ok"] and len(rows) == 3


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_files_without_duplicate_rows(tmp_path):
    catalog_entries, results, files = synthetic_world(40, 3)
    catalog = write_catalog(tmp_path, catalog_entries)
    command = [sys.executable, "-m", "lookalike_cli", "crawl", "--catalog", catalog, "--threads", "2",
               "--per-person", "3", "--allow-private-addresses"]
    with CrawlServer(results, files, latency=0.03) as server:
        killed = tmp_path / "killed"
        crawl_run = subprocess.Popen([*map(str, command), "--search-host", server.url, "--data-dir", str(killed)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (len(files_under(killed / "images")) >= 20 and
                                                   any((killed / "parts" / "crawl").glob("part-*"))):
            time.sleep(0.05)
        crawl_run.send_signal(signal.SIGKILL)
        crawl_run.wait()
        assert not (killed / "crawl.parquet").exists() and (killed / "parts" / "crawl").is_dir()
        options = ["--catalog", catalog, "--per-person", 3, "--search-host", server.url, "--allow-private-addresses"]
        run("crawl", *options, "--data-dir", killed)
        clean = tmp_path / "clean"
        run("crawl", *options, "--data-dir", clean)

    assert files_under(killed / "images") == files_under(clean / "images")
    assert len(files_under(clean / "images")) == 120
    rows = manifest(killed)
    assert len({(row["alias"], row["url"]) for row in rows}) == len(rows) == len(manifest(clean))
    assert not (killed / "parts").exists()
    assert not [path for path in killed.rglob("*") if path.name.endswith(".tmp")]


# --- bad input: one line, exit 1, nothing written


@pytest.mark.parametrize("alias", ["../up", "/etc/x", "", ".", "..", "a/b", "a\\b", ".hidden"])
def test_an_alias_that_could_leave_the_images_folder_is_rejected_with_its_position(tmp_path, alias):
    catalog = write_catalog(tmp_path, [{"name": "Ann", "alias": "ann"}, {"name": "Evil", "alias": alias}])
    result = run("crawl", "--catalog", catalog, "--data-dir", tmp_path / "data", code=1)
    assert result.output.startswith(f"Error: catalog {catalog} entry 1: alias") and result.output.count("\n") == 1
    assert not (tmp_path / "data" / "images").exists()


@pytest.mark.parametrize("rows, options, message", [
    ("alias,link\nann,http://x/a.jpg\n", ["--engine", "urls"], "must have the columns alias and url"),
    ("alias,url\nann,http://x/a.jpg\n../x,http://x/b.jpg\n", ["--engine", "urls"], "row 2: alias '../x' starts"),
    ("alias,url\nann,file:///etc/passwd\n", ["--engine", "urls"], "row 1: 'file:///etc/passwd' is not an http"),
    ("alias,url\nann,http://x/a.jpg\nann,http://[::1/x\n", ["--engine", "urls"], "row 2: 'http://[::1/x' is not an"),
    ("alias,url\n", ["--engine", "bing"], "--urls is read by the urls engine only"),
    (None, ["--engine", "urls"], "the urls engine needs a URL list"),
    (None, ["--search-host", "127.0.0.1:80"], "search_host must look like http://host:port"),
])
def test_bad_url_lists_and_options_are_one_line_errors(tmp_path, rows, options, message):
    catalog = write_catalog(tmp_path, [{"name": "Ann", "alias": "ann"}])
    urls = []
    if rows is not None:
        (tmp_path / "urls.csv").write_text(rows)
        urls = ["--urls", tmp_path / "urls.csv"]
    result = run("crawl", "--catalog", catalog, "--data-dir", tmp_path / "data", *options, *urls, code=1)
    assert message in result.output and result.output.count("\n") == 1


def test_crawl_help_shows_its_settings():
    output = run("crawl", "--help").output
    for option in ("--catalog", "--urls", "--engine", "--per-person", "--threads", "--query-suffix",
                   "--search-host", "--download-timeout", "--max-download-bytes"):
        assert option in output


# --- make pipeline: crawl -> build -> query


@pytest.mark.slow
def test_make_pipeline_crawls_builds_and_answers(tmp_path):
    make = shutil.which("make")
    bin_dir = Path(sys.executable).parent
    if make is None or not (bin_dir / "lookalike").exists():
        pytest.skip("needs make and the lookalike command beside this Python")
    aliases = [person["alias"] for person in PEOPLE]
    results = {person["name"]: [f"/img/{person['alias']}.jpg", f"/img/{person['alias']}-mirror.jpg"]
               for person in PEOPLE}
    photo = tmp_path / "me.jpg"
    face = Image.open(DEMO / "images" / "barack-obama.jpg")
    face.resize((int(face.width * 0.9), int(face.height * 0.9))).save(photo, quality=80)
    data = tmp_path / "data"
    with CrawlServer(results, photo_files(aliases)) as server:
        done = subprocess.run(
            [make, "--no-print-directory", "-o", ".venv/.installed", "pipeline", f"BIN={bin_dir}",
             f"CATALOG={write_catalog(tmp_path, PEOPLE)}", f"DATA={data}", f"PHOTO={photo}",
             f"CRAWL_OPTIONS=--search-host {server.url} --per-person 2 --allow-private-addresses",
             "BUILD_OPTIONS=--num-jitters 1 --workers 2"],
            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "crawl: 4 of 4 people complete" in done.stdout
    answer = [line for line in done.stdout.splitlines() if line.startswith(f"{photo} face 1: ")]
    assert answer and answer[0].startswith(f"{photo} face 1: Barack Obama "), done.stdout
    assert len(list_gallery(data / "images")) == 8
