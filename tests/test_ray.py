"""``--executor ray``: the same galleries as the local pool, from a Ray started here and from a two-node cluster
of separate processes on loopback addresses; workers, nodes and the driver killed mid-build.

Every test starts its own Ray (a few seconds) and builds a few real portraits with dlib, so all are slow. Each
bounds its own time: subprocesses have timeouts, and the engine gives up after ``STALL_SECONDS`` without news.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import shared_path

pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (make install has it)")

from lookalike_cli.runtime import ray_pool as ray_engine  # noqa: E402
from lookalike_cli.config import load_config  # noqa: E402
from lookalike_cli.runtime.ray_pool import MAX_DEATHS, RayPool  # noqa: E402

import ray_tasks  # noqa: E402
from ray_cluster import LoopbackCluster, ray_settings  # noqa: E402

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
PORTRAITS = 24
BUILD_SECONDS = 600  # a build of PORTRAITS photos takes about 20 s here; past this, Ray has stalled


@pytest.fixture
def ray_env(monkeypatch):
    """Ray started by this process gets a folder of its own and finds the test-only functions."""
    folder = Path(tempfile.mkdtemp(prefix="lkray", dir="/tmp"))
    for key, value in ray_settings(folder).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setattr(ray_engine, "STALL_SECONDS", 120.0)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def portraits(tmp_path_factory) -> Path:
    """Copies of the first congress portraits, one person each."""
    source = sorted(shared_path("congress", "images").glob("*.jpg"))[:PORTRAITS]
    folder = tmp_path_factory.mktemp("portraits") / "images"
    folder.mkdir()
    for path in source:
        shutil.copy2(path, folder / path.name)
    return folder


def build_args(images: Path, data: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "lookalike_cli", "build", "--images", str(images), "--data-dir", str(data),
            "--num-jitters", "1", *options]


def run_build(args: list[str], environment: dict | None = None, cluster: LoopbackCluster | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=BUILD_SECONDS, env=environment)
    assert result.returncode == 0, result.stderr[-3000:] + (cluster.client_server_logs() if cluster else "")
    assert "Traceback" not in result.stderr and "SIGTERM handler" not in result.stderr  # Ray's client's line
    return result.stdout


@pytest.fixture(scope="module")
def local_reference(portraits, tmp_path_factory) -> Path:
    """The portraits built by the local pool."""
    data = tmp_path_factory.mktemp("local")
    run_build(build_args(portraits, data, "--workers", "2"))
    return data


def assert_same_tables(data: Path, reference: Path) -> None:
    """Row for row the same filter and embeddings tables (descriptors within 1e-6), every photo once."""
    for name in ("filter.parquet", "embeddings.parquet"):
        rows = pq.read_table(data / name).to_pylist()
        expected = pq.read_table(reference / name).to_pylist()
        paths = [row["path"] for row in rows]
        assert len(paths) == len(set(paths)) == len(expected) > 0
        for row, wanted in zip(rows, expected):
            vectors = [r.pop("embedding", None) for r in (row, wanted)]
            assert row == wanted
            if vectors[0] is not None:
                assert np.abs(np.subtract(*vectors)).max() <= 1e-6
    assert not (data / "parts").exists()


def per_node(stdout: str, done: str) -> dict[str, int]:
    """The summary's images per node: "  detected on 127.0.0.2: 12, 127.0.0.3: 12"."""
    line = re.search(rf"^  {done} on (.*)$", stdout, re.MULTILINE).group(1)
    return {node: int(count) for node, count in (part.rsplit(": ", 1) for part in line.split(", "))}


def done_now(stdout: str, stage: str) -> int:
    return int(re.search(rf"^{stage}: .*\((\d+) (?:detected|computed) now", stdout, re.MULTILINE).group(1))


# --- The engine itself, on a Ray started here ----------------------------------------------------------------

def test_dead_workers_are_replaced_and_a_photo_that_kills_every_worker_is_given_up(ray_env, tmp_path):
    """100 items go in batches (the poison and the item killed once in the first), 10 more one by one."""
    log = tmp_path / "started.txt"
    with RayPool(2, ray_tasks.note_start, (str(log),)) as pool:
        first = list(pool.map(ray_tasks.square_or_die, [(x, str(tmp_path)) for x in range(100)],
                              failed=ray_tasks.gave_up))
        second = list(pool.map(ray_tasks.square_or_die, [(x, str(tmp_path)) for x in range(20, 30)]))
        nodes = dict(pool.nodes)
        with pytest.raises(ray_engine.LookalikeError, match=f"died {MAX_DEATHS} times"):
            list(pool.map(ray_tasks.square_or_die, [(ray_tasks.POISON, str(tmp_path))]))

    failures = [result for result in first if result[0] == "failed"]
    done = [result for result in first + second if result[0] != "failed"]
    assert [x for _, x, _ in failures] == [ray_tasks.POISON]
    assert f"died {MAX_DEATHS} times" in failures[0][2]
    # every other item once, the one killed once included
    assert sorted(square for square, _ in done) == sorted(x * x for x in [*range(100), *range(20, 30)]
                                                          if x != ray_tasks.POISON)
    assert sum(nodes.values()) == 10 and len(nodes) == 1
    # the models load once per worker process: the 2 first ones and those replacing the dead (the poison killed
    # MAX_DEATHS, its batch once then alone, the other item one; the last replacement may not have started
    # before the second map ended)
    started = log.read_text().split()
    assert len(set(started)) == len(started) and 2 + MAX_DEATHS <= len(started) <= 2 + 2 * MAX_DEATHS + 1
    assert {str(pid) for _, pid in done} <= set(started)


def test_a_ray_build_equals_a_local_build(ray_env, portraits, local_reference, tmp_path):
    """In this process, with the engine's own Ray (2 CPUs): the same tables as the local pool's."""
    from lookalike_cli import build

    config = load_config(None, {"num_jitters": 1, "workers": 2, "executor": "ray"})
    summary = build(portraits, tmp_path, None, config)
    assert_same_tables(tmp_path, local_reference)
    assert sum(summary.filter.nodes.values()) == sum(summary.embed.nodes.values()) == PORTRAITS


# --- A cluster of two nodes on this machine ------------------------------------------------------------------

def warmed(cluster: LoopbackCluster, portraits: Path) -> LoopbackCluster:
    """``cluster`` after a build of 4 photos: every node has started a worker once, so that in the tests' builds
    a node's first actor starts within a fraction of a second of the head's (1.4 s later on a cold cluster, near
    the end of a build)."""
    data = Path(tempfile.mkdtemp(prefix="warm", dir=cluster.temp_dir))
    images = data / "images"
    images.mkdir()
    for path in sorted(portraits.iterdir())[:4]:
        shutil.copy2(path, images / path.name)
    run_build(build_args(images, data / "data", "--executor", "ray", "--ray-address", cluster.address),
              cluster.environment, cluster)
    return cluster


@pytest.fixture(scope="module")
def cluster(portraits):
    with LoopbackCluster(nodes=2, cpus=1) as started:
        yield warmed(started, portraits)


def test_a_two_node_build_uses_both_nodes_and_equals_a_local_build(cluster, portraits, local_reference, tmp_path):
    stdout = run_build(build_args(portraits, tmp_path, "--executor", "ray", "--ray-address", cluster.address),
                       cluster.environment)
    assert_same_tables(tmp_path, local_reference)
    detected, computed = per_node(stdout, "detected"), per_node(stdout, "computed")
    assert sum(detected.values()) == sum(computed.values()) == PORTRAITS
    # both nodes worked (the second one's worker may start after the head's has detected every photo)
    assert set(detected) | set(computed) == {"127.0.0.2", "127.0.0.3"}, stdout
    print(stdout)  # the per-node counts, for the record (pytest -s)


def test_caches_are_shared_between_engines(cluster, portraits, tmp_path):
    """Build locally, add photos, build on the cluster (through Ray Client): only the new ones are done; and back."""
    images = tmp_path / "images"
    images.mkdir()
    photos = sorted(portraits.iterdir())[:8]
    local = build_args(images, tmp_path / "data", "--workers", "2")
    on_ray = build_args(images, tmp_path / "data", "--executor", "ray", "--ray-address", cluster.client_address)
    for number, (args, new) in enumerate([(local, photos[:4]), (on_ray, photos[4:6]), (local, photos[6:])]):
        for photo in new:
            shutil.copy2(photo, images / photo.name)
        stdout = run_build(args, cluster.environment, cluster)
        assert done_now(stdout, "filter") == done_now(stdout, "embed") == len(new), stdout
    assert pq.read_table(tmp_path / "data" / "embeddings.parquet").num_rows == 8


def test_a_node_that_cannot_read_the_images_stops_the_build_with_one_line(cluster, portraits, tmp_path):
    """The photos are in a folder mounted in the driver's own mount namespace only: the nodes do not see them,
    as a node without the shared filesystem would not."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to give the driver a mount of its own")
    share = tmp_path / "share"
    share.mkdir()
    photos = " ".join(str(path) for path in sorted(portraits.iterdir())[:4])
    script = f'mount -t tmpfs lookalike-test {share} && cp {photos} {share}/ && exec "$@"'
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                             *build_args(share, tmp_path / "data", "--executor", "ray", "--ray-address",
                                         cluster.address)],
                            capture_output=True, text=True, timeout=BUILD_SECONDS, env=cluster.environment)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    assert re.match(rf"Error: the Ray worker on node 127\.0\.0\.[23] cannot read {share}/.*\.jpg: the images must "
                    "be at the same path on every node", errors[0]), errors


def wait_for_parts(data: Path, stage: str, process: subprocess.Popen, count: int = 2) -> None:
    parts = data / "parts" / stage
    deadline = time.monotonic() + BUILD_SECONDS
    while not (parts.exists() and len(list(parts.glob("part-*.parquet"))) >= count):
        assert process.poll() is None, "the build ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint part appeared"
        time.sleep(0.005)


def test_a_killed_driver_resumes_from_its_parts(cluster, portraits, local_reference, tmp_path):
    args = build_args(portraits, tmp_path, "--executor", "ray", "--ray-address", cluster.address)
    driver = subprocess.Popen(args, env=cluster.environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_for_parts(tmp_path, "embed", driver, 1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert not (tmp_path / "embeddings.parquet").exists()

    stdout = run_build(args, cluster.environment)
    assert done_now(stdout, "filter") == 0 and 0 < done_now(stdout, "embed") < PORTRAITS, stdout
    assert_same_tables(tmp_path, local_reference)


def running_on(cluster: LoopbackCluster, node: int) -> bool:
    """Whether an actor of ``node`` is running an item (its process is a child of the node's raylet)."""
    raylet = str(cluster.raylet_pid(node))
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == raylet and \
                    (entry / "cmdline").read_bytes().startswith(b"ray::DlibActor.run"):
                return True
        except (OSError, IndexError):
            continue
    return False


def test_a_node_lost_mid_build_costs_only_its_running_photos(portraits, local_reference, tmp_path):
    with LoopbackCluster(nodes=2, cpus=1) as lossy:
        warmed(lossy, portraits)
        args = build_args(portraits, tmp_path, "--executor", "ray", "--ray-address", lossy.address)
        driver = subprocess.Popen(args, env=lossy.environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            deadline = time.monotonic() + BUILD_SECONDS
            while not running_on(lossy, 1):
                assert driver.poll() is None and time.monotonic() < deadline, "node 1 never ran a photo"
                time.sleep(0.05)
            lossy.kill_node(1)
            stdout, stderr = driver.communicate(timeout=BUILD_SECONDS)
        finally:
            driver.kill()
    assert driver.returncode == 0, stderr[-3000:]
    assert_same_tables(tmp_path, local_reference)
    assert sum(per_node(stdout, "detected").values()) == PORTRAITS
