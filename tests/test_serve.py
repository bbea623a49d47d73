"""The HTTP API over real HTTP on 127.0.0.1: real worker processes, real dlib models, the demo gallery."""

import base64
import io
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from PIL import Image

from lookalike_cli.cli import cli
from lookalike_cli.serving.http import latency_percentiles
from lookalike_cli.serving.webpage import photo_url

import hostile
from conftest import DEMO, FIXTURES, hard_selfie
from helpers import BODY_LIMIT, api, best_alias, descendants, photo
from servers import lookalike_serve, wait_until


@pytest.fixture(scope="module")
def client(built):
    with api(built) as (client, _):
        yield client


def test_raw_body_answers_the_json_of_query(client, engine):
    path = DEMO / "selfie.jpg"
    response = client.post("/query", content=path.read_bytes(), headers={"content-type": "image/jpeg"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    expected = engine.query_file(path).to_json(photo_url)  # photo URLs instead of the gallery's paths
    expected["photo"] = "upload"
    assert response.json() == {"photos": [expected]}


def test_multipart_upload_and_png_answer(client):
    response = client.post("/query", files={"photo": ("ami.jpg", photo("ami-bera"), "image/jpeg")})
    answer = response.json()["photos"][0]
    assert answer["photo"] == "ami.jpg" and answer["faces"][0]["matches"][0]["name"] == "Ami Bera"
    picture = client.post("/query?format=png", content=photo("ami-bera"))
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(picture.content))
    assert image.format == "PNG" and image.width > image.height > 300


def test_no_face_is_an_empty_answer_or_422_for_a_picture(client):
    coffee = (FIXTURES / "no_face_coffee_cc0.png").read_bytes()
    assert client.post("/query", content=coffee).json()["photos"][0]["faces"] == []
    response = client.post("/query?format=png", content=coffee)
    assert response.status_code == 422 and response.json()["error"] == "no face found in the photo"


def test_the_json_answer_can_carry_the_picture_in_one_request(client):
    """One recognition for a page's answer and its picture: ``?picture=1`` adds the PNG as a data URL."""
    answer = client.post("/query?picture=1", content=photo("ami-bera")).json()
    prefix = "data:image/png;base64,"
    assert answer["photos"][0]["faces"][0]["matches"][0]["alias"] == "ami-bera" and answer["picture"].startswith(prefix)
    drawn = client.post("/query?format=png", content=photo("ami-bera")).content
    assert base64.b64decode(answer["picture"].removeprefix(prefix)) == drawn
    coffee = (FIXTURES / "no_face_coffee_cc0.png").read_bytes()
    no_face = client.post("/query?picture=1", content=coffee).json()
    assert no_face["photos"][0]["faces"] == [] and no_face["picture"] is None
    response = client.post("/query?picture=yes", content=photo("ami-bera"))
    assert response.status_code == 400 and response.json()["error"] == "picture must be 0 or 1, not 'yes'"


def test_a_degraded_selfie_is_found_by_the_fallback_and_says_so(client):
    answer = client.post("/query", content=hard_selfie()).json()["photos"][0]
    assert len(answer["faces"]) == 1
    face = answer["faces"][0]
    assert face["detector"] == "cnn" and face["matches"][0]["name"]
    ordinary = client.post("/query", content=(DEMO / "selfie.jpg").read_bytes()).json()["photos"][0]["faces"][0]
    assert ordinary["detector"] == "hog-coarse"


def test_a_body_over_the_limit_is_413_with_or_without_content_length(client):
    """The client gets its 413 (not a reset connection) though it sends the whole body before reading the
    answer: the server reads and drops the rest of a body it refuses (10 times each way: a reset was 1 in 16)."""
    big = os.urandom(3 * BODY_LIMIT)

    def chunks():
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]
    for _ in range(10):
        assert client.post("/query", content=big).status_code == 413
        response = client.post("/query", content=chunks())
        assert response.status_code == 413 and "limit of 600000 bytes" in response.json()["error"]
        assert response.json()["status"] == "too_big"


@pytest.mark.parametrize("body, params, message, status", [
    (b"<html>not a photo</html>", {}, "not a usable image: undecodable", "rejected"),
    (b"", {}, "send a photo", "bad_request"),
    (b"GIF89a", {"format": "gif"}, "format must be json or png", "bad_request"),
])
def test_bad_requests_are_400_with_a_reason(client, body, params, message, status):
    response = client.post("/query", content=body, params=params)
    assert response.status_code == 400 and message in response.json()["error"]
    assert response.json()["status"] == status


def test_a_multipart_form_without_a_file_is_400(client):
    body = b'--xyz\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--xyz--\r\n'
    response = client.post("/query", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert response.status_code == 400 and "has no file" in response.json()["error"]


def test_concurrent_clients_get_their_own_answers(client):
    aliases = ["aaron-schock", "ami-bera", "barack-obama", "bob-corker"] * 3
    start = threading.Barrier(len(aliases))

    def ask(alias):
        start.wait()
        return best_alias(client.post("/query", content=photo(alias)))

    with ThreadPoolExecutor(len(aliases)) as pool:
        assert list(pool.map(ask, aliases)) == aliases


def test_health_and_stats(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    client.post("/query", content=photo("aaron-schock"))
    stats = client.get("/stats").json()
    assert stats["index"] == {"backend": "exact", "size": 48, "people": 48}
    assert set(stats["calibration"]) == {"mean", "std", "count", "min_similarity"}
    assert stats["workers"] == 2 and stats["queue"] == {"depth": 0, "in_work": 0, "size": 16}
    assert stats["bodies"] == {"receiving": 0, "bytes_held": 0, "bytes_limit": 18 * BODY_LIMIT}
    assert stats["limits"]["max_body_bytes"] == BODY_LIMIT and stats["limits"]["max_faces"] == 10
    assert stats["requests"]["by_status"]["200"] >= 1
    assert stats["requests"]["latency_ms"]["p50"] <= stats["requests"]["latency_ms"]["p99"]


def test_a_full_queue_answers_503_with_retry_after(built):
    with api(built, workers=1, queue_size=1) as (client, _):
        start = threading.Barrier(12)

        def ask(_):
            start.wait()
            return client.post("/query", content=photo("ami-bera"))

        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(ask, range(12)))
        codes = sorted(response.status_code for response in responses)
        assert set(codes) == {200, 503} and codes.count(200) >= 2, codes
        busy = next(response for response in responses if response.status_code == 503)
        assert int(busy.headers["retry-after"]) >= 1 and "busy" in busy.json()["error"]
        assert busy.json()["status"] == "busy"
        assert all(best_alias(r) == "ami-bera" for r in responses if r.status_code == 200)
        assert client.get("/stats").json()["requests"]["by_status"]["503"] == codes.count(503)
        assert client.post("/query", content=photo("bob-corker")).status_code == 200  # and it recovers


@pytest.mark.slow
def test_a_worker_that_dies_costs_its_photo_a_500_then_it_is_replaced(built):
    slow = hostile.collage(8)  # 8 faces, each the mean of 100 jittered copies: seconds of work on any machine
    with api(built, workers=1, max_faces=8, query_num_jitters=100) as (client, recognizer), \
            ThreadPoolExecutor(1) as background:
        answer = background.submit(client.post, "/query", content=slow)
        wait_until(lambda: recognizer.in_work == 1, what="the photo to be in work")
        for pid in recognizer.worker_pids():
            os.kill(pid, signal.SIGKILL)
        response = answer.result()
        assert response.status_code == 500 and "worker failed" in response.json()["error"]
        assert best_alias(client.post("/query", content=photo("ami-bera"))) == "ami-bera"
        assert recognizer.workers_replaced == 1


def test_a_photo_not_answered_in_time_is_504(built):
    # 100 jittered copies of its face: about 1.5 s of work here, 150 times the timeout (killed when it passes)
    with api(built, workers=1, request_timeout=0.01, query_num_jitters=100) as (client, _):
        response = client.post("/query", content=photo("ami-bera"))
        assert response.status_code == 504 and "not answered within 0.01 s" in response.json()["error"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.slow
def test_the_serve_command_runs_until_stopped(built, stop):
    with lookalike_serve(built, stop=stop) as (url, process):
        assert best_alias(httpx.post(f"{url}/query", content=photo("bob-corker"), timeout=60)) == "bob-corker"
        workers = descendants(process.pid)
        assert len(workers) >= 2  # the forkserver and the worker (and multiprocessing's resource tracker)
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), timeout=10,
               what="the worker processes to end")


def test_serve_errors_are_one_line(tmp_path, built):
    result = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "does not exist: run `lookalike build`" in result.output
    with socket.create_server(("127.0.0.1", 0)) as busy:
        taken = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--data-dir", str(built), "--port", str(taken)])
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{taken}" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_latency_percentiles_are_nearest_rank_in_milliseconds():
    assert latency_percentiles([]) == {}
    assert latency_percentiles([0.5]) == {"p50": 500.0, "p90": 500.0, "p99": 500.0}
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert latency_percentiles(values) == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert latency_percentiles(list(reversed(values)), (100,)) == {"p100": 100.0}
