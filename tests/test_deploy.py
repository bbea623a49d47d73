"""Two `lookalike serve` replicas behind Debian's nginx, configured by deploy/nginx/lookalike.conf itself (only its
addresses changed): a replica killed under load costs no client request, a new generation reaches both replicas
within the documented time, nginx limits a client's rate, and the answer log sees the client as nginx saw it,
never an address a client wrote into X-Forwarded-For."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from lookalike_cli.answers.log import client_hash

from conftest import DEMO
from helpers import publish_without
from servers import NGINX, RELOAD_SECONDS, SALT, free_port, start_nginx, start_replica, stop, wait_until

SWITCH_BOUND = RELOAD_SECONDS + 15.0  # docs/deploy.md: reload_seconds, then the time to load the new generation
CLIENT, DIRECT, FLOODER = "127.0.0.7", "127.0.0.8", "127.0.0.9"  # each client its own loopback address

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not NGINX.exists(), reason="nginx is not installed (.ci/run installs it as root)")]


def client(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60)


class Deployment:
    def __init__(self, folder: Path, data: Path):
        self.folder, self.data = folder, data
        self.ports = [free_port(), free_port()]
        self.logs = [folder / f"answers-{number}.jsonl" for number in range(2)]
        self.replicas = [start_replica(data, port, log) for port, log in zip(self.ports, self.logs)]
        self.listen = free_port()
        self.nginx = start_nginx(folder, self.listen, self.ports)
        self.url = f"http://127.0.0.1:{self.listen}"

    def restart(self, number: int) -> None:
        stop(self.replicas[number], signal.SIGKILL)
        self.replicas[number] = start_replica(self.data, self.ports[number], self.logs[number])

    def logged_clients(self) -> set[str]:
        return {json.loads(line).get("client") for log in self.logs if log.exists()
                for line in log.read_text().splitlines()}

    def close(self) -> None:
        stop(self.nginx, signal.SIGQUIT)
        for replica in self.replicas:
            stop(replica)


@pytest.fixture(scope="module")
def deployment(built, tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy")
    data = folder / "data"
    shutil.copytree(built, data)
    deployed = Deployment(folder, data)
    yield deployed
    deployed.close()


SELFIE = (DEMO / "selfie.jpg").read_bytes()


def test_the_answer_log_sees_the_client_as_nginx_saw_it(deployment):
    spoofed = {"X-Forwarded-For": "6.6.6.6"}
    with client(CLIENT) as http:
        assert http.post(f"{deployment.url}/query", content=SELFIE, headers=spoofed).status_code == 200
    with client(DIRECT) as http:  # straight to a replica, not through nginx: its header is not believed
        assert http.post(f"http://127.0.0.1:{deployment.ports[0]}/query", content=SELFIE,
                         headers=spoofed).status_code == 200
    wanted = {client_hash(CLIENT, SALT), client_hash(DIRECT, SALT)}
    wait_until(lambda: wanted <= deployment.logged_clients(), 30, "the answer lines")
    assert client_hash("6.6.6.6", SALT) not in deployment.logged_clients()
    assert client_hash("127.0.0.1", SALT) not in deployment.logged_clients()  # nginx's own address


def test_a_replica_killed_under_load_costs_no_request(deployment):
    answers: list[int] = []
    stop_at = time.monotonic() + 8

    def post_selfies(number: int) -> None:  # 4 a second at most: under nginx's rate per client
        with client(f"127.0.1.{number}") as http:
            while (began := time.monotonic()) < stop_at:
                answers.append(http.post(f"{deployment.url}/query", content=SELFIE).status_code)
                time.sleep(max(0.0, began + 0.25 - time.monotonic()))

    threads = [threading.Thread(target=post_selfies, args=(number,)) for number in range(1, 7)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    killed_after = len(answers)
    stop(deployment.replicas[0], signal.SIGKILL)
    for thread in threads:
        thread.join()
    assert killed_after > 3 and len(answers) > killed_after + 3
    assert set(answers) == {200}, answers
    deployment.restart(0)


def test_a_new_generation_reaches_both_replicas_in_time(deployment, fast_config):
    started = time.monotonic()
    generation = publish_without(deployment.data, "ami-bera", fast_config)

    def switched() -> bool:
        return all(httpx.get(f"http://127.0.0.1:{port}/stats").json()["generation"] == generation
                   for port in deployment.ports)

    wait_until(switched, SWITCH_BOUND, "both replicas on the new generation")
    assert time.monotonic() - started < SWITCH_BOUND
    photo = (DEMO / "images" / "ami-bera.jpg").read_bytes()
    with client(CLIENT) as http:
        for _ in range(4):  # both replicas, in turn
            best = http.post(f"{deployment.url}/query", content=photo).json()["photos"][0]["faces"][0]
            assert best["matches"][0]["alias"] != "ami-bera"


def test_nginx_limits_one_clients_rate(deployment):
    with client(FLOODER) as http:
        codes = [http.post(f"{deployment.url}/query", content=b"not a photo").status_code for _ in range(40)]
    assert codes.count(429) >= 10 and set(codes) == {400, 429}, codes
    with client(CLIENT) as http:  # another address is not limited by the flood
        assert http.post(f"{deployment.url}/query", content=SELFIE).status_code == 200
