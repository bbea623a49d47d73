"""``serve --executor ray`` on a two-node Ray cluster of separate processes on loopback addresses (head 127.0.0.2,
worker 127.0.0.3): the same answers as the local pool, counted on both nodes; a photo past its deadline has its
actor replaced; a node lost during a stream of selfies costs no request that hangs, and the rest are answered; a
node that joins is used without a restart."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import DEMO
from helpers import publish_without
from servers import lookalike_serve, wait_until

pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (make install has it)")

from ray_cluster import LoopbackCluster  # noqa: E402

pytestmark = pytest.mark.slow

PHOTOS = [DEMO / "selfie.jpg"] + sorted((DEMO / "images").glob("*.jpg"))[:7]
DEADLINE = 3.0  # --request-timeout of the servers here


def on_ray(cluster: LoopbackCluster, data: Path, *options: str, deadline: float = DEADLINE):
    return lookalike_serve(data, "--executor", "ray", "--ray-address", cluster.address, "--workers", "0",
                           "--request-timeout", str(deadline), "--max-client-photos", "100", *options,
                           environment=cluster.environment)


def answers(url: str, photos: list[Path], clients: int = 4) -> list[httpx.Response]:
    """Each photo posted once, by ``clients`` threads at a time."""
    responses: dict[int, httpx.Response] = {}

    def post(numbers: range) -> None:
        with httpx.Client(timeout=60) as http:
            for number in numbers:
                responses[number] = http.post(f"{url}/query", content=photos[number].read_bytes())

    threads = [threading.Thread(target=post, args=(range(start, len(photos), clients),)) for start in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [responses[number] for number in range(len(photos))]


@pytest.fixture(scope="module")
def cluster():
    with LoopbackCluster(nodes=2, cpus=1) as started:
        yield started


def test_ray_workers_answer_as_the_local_pool_on_both_nodes(cluster, built):
    with lookalike_serve(built, "--workers", "2", "--max-client-photos", "100") as (url, _):
        local = [response.json() for response in answers(url, PHOTOS)]
    with on_ray(cluster, built) as (url, _):
        remote = answers(url, PHOTOS * 3)
        stats = httpx.get(f"{url}/stats").json()
        metrics = httpx.get(f"{url}/metrics").text
    assert {response.status_code for response in remote} == {200}
    assert [response.json() for response in remote[:len(PHOTOS)]] == local
    assert stats["workers"] == 2 and set(stats["nodes"]) == {cluster.node_ip(0), cluster.node_ip(1)}
    assert all(node["answers"] > 0 and node["workers"] == 1 for node in stats["nodes"].values()), stats["nodes"]
    assert sum(node["answers"] for node in stats["nodes"].values()) == len(remote)
    assert f'lookalike_node_workers{{node="{cluster.node_ip(1)}"}} 1.0' in metrics


def test_an_actor_past_its_deadline_is_replaced(cluster, built, tmp_path):
    from PIL import Image, ImageFilter

    noise = tmp_path / "noise.jpg"  # no face: HOG's fine look, then the CNN's: over a second, past the deadline
    pixels = np.random.default_rng(7).integers(0, 256, (3000, 3000, 3), dtype=np.uint8)
    Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(3)).save(noise, quality=80)
    with on_ray(cluster, built, deadline=0.5) as (url, _):
        started = time.monotonic()
        slow = httpx.post(f"{url}/query", content=noise.read_bytes(), timeout=60)
        assert slow.status_code == 504 and time.monotonic() - started < 5
        stats = httpx.get(f"{url}/stats").json()
        assert stats["workers_replaced"] == 1
        assert {response.status_code for response in answers(url, PHOTOS)} == {200}


def test_a_node_lost_during_a_stream_costs_no_hung_request(built):
    with LoopbackCluster(nodes=2, cpus=1) as lossy, on_ray(lossy, built) as (url, _):
        codes: list[tuple[float, int]] = []
        stop_at = time.monotonic() + 12

        def stream(number: int) -> None:
            with httpx.Client(timeout=DEADLINE + 30) as http:
                while time.monotonic() < stop_at:
                    photo = PHOTOS[number % len(PHOTOS)].read_bytes()
                    codes.append((time.monotonic(), http.post(f"{url}/query", content=photo).status_code))

        threads = [threading.Thread(target=stream, args=(number,)) for number in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(3)
        assert httpx.get(f"{url}/stats").json()["nodes"][lossy.node_ip(1)]["answers"] > 0
        lost_at = time.monotonic()
        lossy.kill_node(1)
        for thread in threads:
            thread.join()
        assert {code for _, code in codes} <= {200, 503, 504}, codes
        late = [code for when, code in codes if when > lost_at + DEADLINE]
        assert late and set(late) == {200}, codes
        # once Ray counts the node out (its health checks, some seconds), one worker per CPU again
        wait_until(lambda: {node: figures["workers"] for node, figures in httpx.get(f"{url}/stats").json()[
            "nodes"].items() if figures["workers"]} == {lossy.node_ip(0): 1}, 90, "one worker on the node left")


def test_a_node_that_joins_is_used_without_a_restart(built):
    with LoopbackCluster(nodes=1, cpus=1) as growing, on_ray(growing, built) as (url, _):
        assert httpx.get(f"{url}/stats").json()["workers"] == 1
        joined = growing.node_ip(growing.add_node())
        wait_until(lambda: httpx.get(f"{url}/stats").json()["nodes"].get(joined, {}).get("workers"), 60,
                   "a worker on the new node")
        assert {response.status_code for response in answers(url, PHOTOS * 2)} == {200}
        nodes = httpx.get(f"{url}/stats").json()["nodes"]
        assert nodes[joined]["answers"] > 0 and nodes[growing.node_ip(0)]["answers"] > 0


def test_a_new_generation_is_loaded_by_the_same_actors(cluster, built, fast_config, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(built, data)
    with on_ray(cluster, data, "--reload-seconds", "1") as (url, _):
        before = httpx.get(f"{url}/stats").json()
        generation = publish_without(data, "ami-bera", fast_config)
        wait_until(lambda: httpx.get(f"{url}/stats").json()["generation"] == generation, 60, "the new generation")
        after = httpx.get(f"{url}/stats").json()
        assert after["workers"] == before["workers"] == 2 and after["workers_replaced"] == 0
        for response in answers(url, [DEMO / "images" / "ami-bera.jpg"] * 4):
            assert response.json()["photos"][0]["faces"][0]["matches"][0]["alias"] != "ami-bera"
