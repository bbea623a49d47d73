"""The answer log, `lookalike stats` and the Prometheus metrics: real servers, real models, the demo gallery."""

import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from lookalike_cli.answers.log import FIELDS, MATCH_FIELDS, AnswerLines, AnswerLog, answer_entry, client_hash
from lookalike_cli.answers.outcomes import OUTCOMES
from lookalike_cli.answers.stats import HUB_ALPHA, HUB_RATIO, binomial_tail, hub_p_value, similarity_bin
from lookalike_cli.config import AnswersConfig
from lookalike_cli.answers.results import FaceResult, Match, PhotoResult

from conftest import DEMO, FIXTURES, encoded, hard_selfie, run, side_by_side
from fake_telegram import FakeTelegram
from helpers import BODY_LIMIT, TOKEN, api, best_alias, descendants, photo, publish_without, raw_answer, reply, \
    start_bot, stop_bot
from servers import free_port, lookalike_serve, running, wait_until

OPTIONAL = {"reason", "code", "client"}


def lines_of(path: Path, count: int) -> list[dict]:
    """The log's entries once it holds ``count`` lines (the writer thread writes them after the answers)."""
    wait_until(lambda: path.exists() and len(path.read_bytes().splitlines()) >= count, timeout=30,
               what=f"{count} lines in {path}")
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def check_entry(entry: dict, channel: str, generation: str) -> None:
    """A well-formed line: its fields with their types, the channel and generation, nothing else."""
    assert set(FIELDS) <= set(entry) <= set(FIELDS) | OPTIONAL, entry
    assert all(isinstance(entry[key], kind) for key, kind in FIELDS.items()), entry
    assert entry["channel"] == channel and entry["generation"] == generation and entry["status"] in OUTCOMES
    assert entry["time"].endswith("Z") and entry["latency_ms"] >= 0
    assert entry["faces"] >= len(entry["matches"])  # found, and answered (at most query.max_faces)
    for match in entry["matches"]:
        assert set(MATCH_FIELDS) <= set(match) <= set(MATCH_FIELDS) | {"detector"}
        assert 0 <= match["similarity"] <= 1 and match["distance"] >= 0


def generation_of(data_dir: Path) -> str:
    return (data_dir / "generations" / "CURRENT").read_text().strip()


def answer(*aliases: str, similarity: float = 0.5) -> PhotoResult:
    """A worker's result with one face per alias, as the recognizer returns it."""
    faces = [FaceResult(box=[0, 0, 10, 10], matches=[Match(alias, alias, 1 - similarity, similarity, "x.jpg")])
             for alias in aliases]
    return PhotoResult(photo="upload", faces=faces)


# --- the log's pure parts ------------------------------------------------------------------------------------

def test_binomial_tail_is_the_sum_of_the_probabilities():
    def brute(k, n, p):
        return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))

    for k, n, p in [(0, 10, 0.3), (3, 10, 0.3), (10, 10, 0.3), (11, 10, 0.3), (7, 200, 1 / 48), (40, 480, 1 / 48),
                    (1, 1, 0.5)]:
        assert binomial_tail(k, n, p) == pytest.approx(brute(k, n, p), rel=1e-9, abs=1e-300)
    assert binomial_tail(5000, 10_000, 1 / 1000) == 0.0  # underflows to 0 without walking all 10,000 terms


def test_a_hub_is_far_above_one_in_n_and_not_chance():
    total, people = 480, 48  # 10 answers each if alike
    assert hub_p_value(60, total, people) is not None  # 6x, p tiny
    assert hub_p_value(45, total, people) is None  # under HUB_RATIO x
    assert hub_p_value(3, 10, people) is None  # 14x the expected 0.2, but 3 of 10 happens by chance too often
    assert HUB_RATIO * 10 / people < 3 and binomial_tail(3, 10, 1 / people) > HUB_ALPHA / people


def test_similarity_bins_cover_zero_to_one():
    assert [similarity_bin(value, 20) for value in (0.0, 0.04, 0.05, 0.5, 0.99, 1.0)] == [0, 0, 1, 10, 19, 19]
    assert similarity_bin(-0.5, 4) == 0 and similarity_bin(1.5, 4) == 3


def test_the_client_hash_depends_on_the_salt_and_hides_the_client():
    first = client_hash("203.0.113.7", "salt-a")
    assert first == client_hash("203.0.113.7", "salt-a") != client_hash("203.0.113.7", "salt-b")
    assert first != client_hash("203.0.113.8", "salt-a") and "203" not in first and len(first) == 16


def test_the_log_rotates_by_size_and_keeps_whole_lines(tmp_path):
    path = tmp_path / "answers.jsonl"
    log = AnswerLog(AnswersConfig(log=str(path), log_max_bytes=2000, log_backups=2))
    for number in range(100):
        log.write(answer_entry("query", "g1", "ok", 0.01 * number, answer("ami-bera")))
    log.close()
    files = sorted(tmp_path.iterdir())
    assert [file.name for file in files] == ["answers.jsonl", "answers.jsonl.1", "answers.jsonl.2"]
    assert all(file.stat().st_size <= 2000 for file in files)
    reading = AnswerLines(files)
    entries = list(reading)
    kept = len(entries)
    assert reading.skipped == 0 and 20 < kept < 100  # whole lines; the oldest were rotated away, the newest kept
    assert sorted(entry["latency_ms"] for entry in entries) == [10.0 * n for n in range(100 - kept, 100)]


def test_a_torn_last_line_is_skipped_and_the_next_writer_starts_a_new_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    whole = json.dumps({"time": "2026-01-01T00:00:00.000Z"} | answer_entry("http", "g1", "ok", 0.2,
                                                                              answer("ami-bera")))
    nested = "[" * 100_000  # not this log's: JSON nested deeper than Python's parser goes
    path.write_text(whole + "\n" + nested + "\n" + whole[:len(whole) // 2])  # killed in the middle of a line
    reading = AnswerLines([path])
    assert len(list(reading)) == 1 and reading.skipped == 2
    log = AnswerLog(AnswersConfig(log=str(path)))
    log.write(answer_entry("http", "g1", "busy", 0.0))
    log.close()
    reading = AnswerLines([path])
    assert [entry["status"] for entry in reading] == ["ok", "busy"] and reading.skipped == 2


def test_lines_whose_time_status_or_numbers_are_not_the_writer_s_are_skipped(tmp_path):
    path = tmp_path / "answers.jsonl"
    entry = {"time": "2026-01-01T00:00:00.000Z"} | answer_entry("http", "g1", "ok", 0.2, answer("ami-bera"))
    lines = [json.dumps(entry)]
    for key, value in [("similarity", math.nan), ("similarity", math.inf), ("similarity", 1e308),
                       ("distance", -1.0), ("distance", math.inf)]:
        changed = json.loads(json.dumps(entry))
        changed["matches"][0][key] = value
        lines.append(json.dumps(changed))  # NaN and Infinity as Python's json writes them
    lines.append(json.dumps(entry | {"latency_ms": math.nan}))
    lines.append(json.dumps(entry | {"time": "\u202e2026-01-01T00:00:00.000Z"}))  # a right-to-left override
    lines.append(json.dumps(entry | {"status": "x" * 100_000}))
    path.write_text("\n".join(lines) + "\n")
    reading = AnswerLines([path])
    assert len(list(reading)) == 1 and reading.skipped == 8


# Writes answers 1 to 7 to the log file argv[1]: 2 and 3, then 5, while the file may grow by 20 bytes only (as on
# a full disk), 7 after the log is closed
UNWRITABLE_FOR_A_WHILE = """
import json, logging, os, resource, signal, sys
from lookalike_cli.answers.log import JsonLine, LogFile, answer_entry
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
logging.basicConfig(format="%(levelname)s %(message)s")
log = LogFile(sys.argv[1], maxBytes=1_000_000, backupCount=1, encoding="utf-8")
log.setFormatter(JsonLine())
limits = resource.getrlimit(resource.RLIMIT_FSIZE)
for number in range(1, 8):
    if number in (2, 5, 7):
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(sys.argv[1]) + 20, limits[1]))
    if number in (4, 6):
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    log.emit(logging.makeLogRecord({"msg": answer_entry("query", "g1", "ok", number)}))
log.close()
print(log.lost)
"""


def test_answers_the_log_cannot_take_are_lost_whole_and_said_once(tmp_path):
    path = tmp_path / "answers.jsonl"
    ran = subprocess.run([sys.executable, "-c", UNWRITABLE_FOR_A_WHILE, str(path)], capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0 and ran.stdout == "4\n", ran.stderr
    stopped = f"WARNING cannot write the answer log {path}: File too large; answers go unlogged until it can"
    assert ran.stderr.splitlines() == [
        stopped, f"WARNING the answer log {path} is written again (answers not logged: 2)",
        stopped, f"WARNING the answer log {path} is written again (answers not logged: 1)",
        stopped, f"WARNING the answer log {path} was closed while it could not be written (answers not logged: 1)"]
    reading = AnswerLines([path])  # the lines cut short by the limit were ended, and are skipped
    assert [entry["latency_ms"] for entry in reading] == [1000, 4000, 6000] and reading.skipped == 3


def test_query_answers_even_when_its_log_cannot_be_written(built, caplog):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full, a device every write to fails with 'No space left on device'")
    printed = run("query", DEMO / "images" / "ami-bera.jpg", "--data-dir", built, "--log", "/dev/full").output
    assert printed.startswith(f"{DEMO / 'images' / 'ami-bera.jpg'} face 1: "), printed
    assert [record.getMessage() for record in caplog.records if record.levelname == "WARNING"] == [
        "cannot write the answer log /dev/full: No space left on device; answers go unlogged until it can",
        "the answer log /dev/full was closed while it could not be written (answers not logged: 1)"]


# --- lookalike stats -------------------------------------------------------------------------------------------

def test_stats_of_a_known_sequence_of_answers(built, tmp_path):
    gallery = sorted(path.stem for path in (DEMO / "images").glob("*.jpg"))
    rng = random.Random(18)
    hub, shown = "barack-obama", rng.sample([alias for alias in gallery if alias != "barack-obama"], 20)
    faces = [hub] * 60 + [rng.choice(shown) for _ in range(100)] + shown  # every one of `shown` at least once
    rng.shuffle(faces)
    results = [answer(alias, similarity=rng.random()) for alias in faces[:-2]] + [answer(*faces[-2:])]  # 2 faces
    path = tmp_path / "answers.jsonl"
    log = AnswerLog(AnswersConfig(log=str(path)))
    for result in results:
        log.write(answer_entry("http", generation_of(built), "ok", 0.3, result, code=200))
    for status in ["busy", "busy", "timeout", "no_face"]:
        log.write(answer_entry("http", generation_of(built), status, 0.0, answer() if status == "no_face" else None))
    log.write(answer_entry("http", "an-older-generation", "ok", 0.3, answer("someone-removed")))
    log.close()
    with open(path, "a") as fh:
        fh.write('{"time": "2026-01-01T00:00:00.000Z", "channel": "ht')  # a torn line
    # computed independently of answer_stats
    top1 = Counter(face.matches[0].alias for result in results for face in result.faces)
    answered = sum(top1.values())
    never = sorted(set(gallery) - set(top1))
    report = json.loads(run("stats", "--log", path, "--data-dir", built, "--json", "--top", 5,
                            "--png", tmp_path / "stats.png").output)
    assert report["skipped_lines"] == 1 and report["entries"] == len(results) + 5
    assert report["coverage"] == {"matched": 21, "people": 48, "share": 21 / 48}
    assert report["never_matched"] == never and len(never) == 27
    assert report["faces"] == answered
    ranked = sorted(top1.items(), key=lambda item: (-item[1], item[0]))[:5]
    assert [(person["alias"], person["count"]) for person in report["top"]] == ranked
    assert report["top"][0]["share"] == pytest.approx(top1[hub] / answered)
    assert [person["alias"] for person in report["hubs"]] == [hub]
    assert Path(report["hubs"][0]["image"]).name == "barack-obama.jpg"
    assert Path(report["hubs"][0]["image"]).is_file()
    assert report["errors"] == {"busy": 2, "timeout": 1}
    assert report["not_in_gallery"] == {"someone-removed": 1}
    assert sum(report["similarity_histogram"]["counts"]) == answered + 1
    assert report["rank_frequency"] == sorted(top1.values(), reverse=True)
    picture = Image.open(tmp_path / "stats.png")
    assert picture.format == "PNG" and picture.width > 800
    text = run("stats", "--log", path, "--data-dir", built).output
    assert f"coverage: 21 of 48 people ({21 / 48:.1%})" in text and "1 unreadable line(s) skipped" in text
    assert "Barack Obama: 60 faces" in text and "barack-obama.jpg" in text


def test_query_log_writes_a_line_per_photo_without_paths(built, tmp_path):
    path = tmp_path / "query.jsonl"
    (tmp_path / "hard.png").write_bytes(hard_selfie())
    printed = run("query", DEMO / "images" / "ami-bera.jpg", FIXTURES / "no_face_coffee_cc0.png",
                  tmp_path / "hard.png", "--data-dir", built, "--log", path, code=1).output  # 1: a photo without a face
    lines = printed.splitlines()
    assert "found by" not in lines[0] and lines[-1].endswith(", found by the fallback: cnn)")
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    for entry in entries:
        check_entry(entry, "query", generation_of(built))
    assert [entry["status"] for entry in entries] == ["ok", "no_face", "ok"]
    assert entries[0]["matches"][0]["alias"] == "ami-bera"
    assert [entry["matches"][0]["detector"] for entry in (entries[0], entries[2])] == ["hog-coarse", "cnn"]
    text = path.read_text()
    assert str(DEMO) not in text and "coffee" not in text and ".jpg" not in text and ".png" not in text


# --- serve ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_serve_logs_one_line_per_answer_without_photo_name_or_address(built, tmp_path):
    path = tmp_path / "answers.jsonl"
    two = encoded(side_by_side(DEMO / "images" / "ami-bera.jpg", DEMO / "images" / "bob-corker.jpg"), "JPEG")
    with api(built, log=str(path), client_salt="deployment-secret") as (client, _):
        sent = [client.post("/query", files={"photo": ("my-secret-name.jpg", photo("ami-bera"), "image/jpeg")}),
                client.post("/query?format=png", content=two),
                client.post("/query", content=(FIXTURES / "no_face_coffee_cc0.png").read_bytes()),
                client.post("/query", content=b"<html>not a photo</html>"),
                client.post("/query", content=b""),
                client.post("/query", content=os.urandom(BODY_LIMIT + 1))]
        entries = lines_of(path, len(sent))
    assert [response.status_code for response in sent] == [200, 200, 200, 400, 400, 413]
    assert len(entries) == len(sent)
    for entry in entries:
        check_entry(entry, "http", generation_of(built))
    assert [entry["status"] for entry in entries] == ["ok", "ok", "no_face", "rejected", "bad_request", "too_big"]
    assert [entry["code"] for entry in entries] == [response.status_code for response in sent]
    assert [[match["alias"] for match in entry["matches"]] for entry in entries[:2]] == [
        ["ami-bera"], ["ami-bera", "bob-corker"]]
    assert entries[3]["reason"] == "undecodable"
    assert {entry["client"] for entry in entries} == {client_hash("127.0.0.1", "deployment-secret")}
    text = path.read_text()
    assert "my-secret-name" not in text and "127.0.0.1" not in text and "upload" not in text
    assert ".jpg" not in text and str(built) not in text


def metric_values(text: str) -> dict[tuple[str, tuple], float]:
    """Samples of a /metrics text by (name, sorted labels), parsed by prometheus-client's own parser."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.mark.slow
def test_metrics_move_with_the_requests_sent(built):
    with api(built) as (client, recognizer), api(built) as (other, _):
        before = metric_values(client.get("/metrics").text)
        assert client.get("/metrics").headers["content-type"].startswith("text/plain")
        for _ in range(3):
            assert client.post("/query", content=photo("ami-bera")).status_code == 200
        client.post("/query", content=(FIXTURES / "no_face_coffee_cc0.png").read_bytes())
        client.post("/query", content=b"")
        assert client.post("/query", content=hard_selfie()).json()["photos"][0]["faces"][0]["detector"] == "cnn"
        after = metric_values(client.get("/metrics").text)
        untouched = metric_values(other.get("/metrics").text)  # another app of the same process

    def moved(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before[key]

    assert moved("lookalike_answers_total", status="ok") == 4
    assert moved("lookalike_answers_total", status="no_face") == 1
    assert moved("lookalike_answers_total", status="bad_request") == 1
    assert moved("lookalike_answers_total", status="busy") == 0
    assert moved("lookalike_answer_seconds_count") == 5
    assert moved("lookalike_answer_seconds_sum") > 0
    assert moved("lookalike_faces_per_photo_count") == 5 and moved("lookalike_faces_per_photo_sum") == 4
    assert moved("lookalike_photos_without_face_total") == 1
    assert moved("lookalike_faces_found_total", detector="hog-coarse") == 3
    assert moved("lookalike_faces_found_total", detector="hog") == 0
    assert moved("lookalike_faces_found_total", detector="cnn") == 1
    assert moved("lookalike_faces_found_total", detector="hog-upsampled") == 0
    assert moved("lookalike_faces_found_total", detector="hog-stretched") == 0
    assert untouched[("lookalike_answers_total", (("status", "ok"),))] == 0
    assert after[("lookalike_gallery_vectors", ())] == 48 and after[("lookalike_gallery_people", ())] == 48
    assert after[("lookalike_gallery_info", (("backend", "exact"), ("generation", generation_of(built))))] == 1
    assert after[("lookalike_workers", ())] == recognizer.workers
    assert after[("lookalike_queue_depth", ())] == 0 and after[("lookalike_workers_busy", ())] == 0


@pytest.mark.slow
def test_the_log_and_metrics_follow_a_newly_published_generation(built, fast_config, tmp_path):
    data, path = tmp_path / "data", tmp_path / "answers.jsonl"
    shutil.copytree(built, data)
    with api(data, log=str(path)) as (client, recognizer):
        first = recognizer.generation
        assert best_alias(client.post("/query", content=photo("bob-corker"))) == "bob-corker"
        second = publish_without(data, "bob-corker", fast_config)
        assert recognizer.switch_to_published()  # what serve does on SIGHUP or every --reload-seconds
        assert best_alias(client.post("/query", content=photo("bob-corker"))) != "bob-corker"
        metrics = metric_values(client.get("/metrics").text)
        entries = lines_of(path, 2)
    assert first != second and [entry["generation"] for entry in entries] == [first, second]
    assert metrics[("lookalike_gallery_info", (("backend", "exact"), ("generation", second)))] == 1
    assert metrics[("lookalike_gallery_people", ())] == 47 and metrics[("lookalike_gallery_vectors", ())] == 47


def test_metrics_can_be_turned_off(built):
    with api(built, metrics=False) as (client, _):
        assert client.get("/metrics").status_code == 404
        assert client.post("/query", content=photo("ami-bera")).status_code == 200


@pytest.mark.slow
def test_a_killed_server_leaves_a_readable_log(built, tmp_path):
    path = tmp_path / "answers.jsonl"

    process = subprocess.Popen([sys.executable, "-m", "lookalike_cli", "serve", "--data-dir", str(built),
                                "--port", "0", "--workers", "1", "--log", str(path), "--max-client-photos", "3"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    assert " on http://" in line, line
    url = line.split(" on ")[1].split()[0]
    stop = threading.Event()

    def flood():
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                try:
                    http.post(url, content=photo("bob-corker"))
                except httpx.HTTPError:
                    return  # the server is gone

    clients = [threading.Thread(target=flood) for _ in range(3)]
    orphans: set[int] = set()
    try:
        for thread in clients:
            thread.start()
        lines_of(path, 5)
        orphans = descendants(process.pid)  # its pool's processes, left behind by a SIGKILL
        process.send_signal(signal.SIGKILL)  # while answers are being written
        process.wait(30)
    finally:
        stop.set()
        for thread in clients:
            thread.join(60)
        process.kill()
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    reading = AnswerLines([path])
    written = list(reading)
    assert len(written) >= 5 and reading.skipped == 0
    assert path.read_bytes().endswith(b"\n")  # each line is written whole, in one write
    with open(path, "ab") as fh:
        fh.write(path.read_bytes().splitlines()[0][:40])  # as if killed in the middle of a line
    report = json.loads(run("stats", "--log", path, "--data-dir", built, "--json").output)
    assert report["skipped_lines"] == 1 and report["entries"] == len(written)
    assert report["statuses"]["ok"] == len(written) and report["top"][0]["alias"] == "bob-corker"
    with lookalike_serve(built, "--log", str(path)) as (url, _):  # appends to the same log, on a line of its own
        assert httpx.post(f"{url}/query", content=photo("ami-bera"), timeout=60).status_code == 200
        wait_until(lambda: len(list(AnswerLines([path]))) == len(written) + 1, timeout=30,
                   what="the new server's line")
    assert list(AnswerLines([path]))[-1]["matches"][0]["alias"] == "ami-bera"


# --- bot -----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_bot_logs_its_answers_and_serves_metrics(built, tmp_path):
    fake = FakeTelegram(TOKEN)
    path, port = tmp_path / "answers.jsonl", free_port()
    chats = {"photo": 987_654_301, "file": 987_654_302, "no_face": 987_654_303, "broken": 987_654_304,
             "huge": 987_654_305, "text": 987_654_306}
    with running(fake.app()) as url, open(tmp_path / "bot.log", "w+") as output:
        process = start_bot(built, url, output, "--log", str(path), "--metrics-port", str(port),
                            "--client-salt", "bot-secret", "--max-connections", "4", "--header-timeout", "2")
        try:
            wait_until(lambda: fake.called("getUpdates") or process.poll() is not None, what="the bot to poll")
            assert process.poll() is None, "the bot stopped"
            fake.photo(chats["photo"], photo("ami-bera"))
            fake.document(chats["file"], photo("bob-corker"), "my-secret-file.jpg", "image/jpeg")
            fake.photo(chats["no_face"], (FIXTURES / "no_face_coffee_cc0.png").read_bytes())
            fake.document(chats["broken"], b"<html>not a photo</html>", "photo.jpg", "image/jpeg")
            fake.document(chats["huge"], photo("ami-bera"), "huge.jpg", "image/jpeg", size=50_000_000)
            fake.message(chats["text"], text="hello")  # not a photo: not an answer of the log
            for chat in chats.values():
                reply(fake, chat)
            entries = lines_of(path, 5)
            metrics = metric_values(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
            # the metrics port keeps the limits of serve: 4 idle connections at most, each closed at the timeout
            with contextlib.ExitStack() as stack:
                idle = [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=60))
                        for _ in range(4)]
                time.sleep(0.2)  # let the server accept them
                assert raw_answer(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == \
                    b"HTTP/1.1 503 Service Unavailable"
                started = time.monotonic()
                assert [sock.recv(1) for sock in idle] == [b""] * 4 and time.monotonic() - started < 2 + 30
        finally:
            stop_bot(process, output)
    assert len(entries) == 5
    for entry in entries:
        check_entry(entry, "bot", generation_of(built))
    by_client = {entry["client"]: entry for entry in entries}
    status = {name: by_client[client_hash(str(chat), "bot-secret")]["status"] for name, chat in chats.items()
              if name != "text"}
    assert status == {"photo": "ok", "file": "ok", "no_face": "no_face", "broken": "rejected", "huge": "too_big"}
    assert by_client[client_hash(str(chats["file"]), "bot-secret")]["matches"][0]["alias"] == "bob-corker"
    text = path.read_text()
    assert "my-secret-file" not in text and "98765430" not in text and ".jpg" not in text
    assert {status: metrics[("lookalike_answers_total", (("status", status),))]
            for status in ("ok", "no_face", "rejected", "too_big", "busy")} == {
        "ok": 2, "no_face": 1, "rejected": 1, "too_big": 1, "busy": 0}
    assert metrics[("lookalike_photos_without_face_total", ())] == 1
