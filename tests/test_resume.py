"""Kill `lookalike build` with SIGKILL in the middle of a stage, run it again: same artifacts, no work redone."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import DEMO

pytestmark = pytest.mark.slow  # every test here builds a gallery of its own

STABLE_COLUMNS = {  # what must be identical between an interrupted and an uninterrupted build
    "filter.parquet": ["path", "alias", "sha256", "box", "landmarks", "status", "reason"],
    "embeddings.parquet": ["path", "alias", "sha256", "box", "embedding"],
}


def build_command(data: Path) -> list[str]:
    return [sys.executable, "-m", "lookalike_cli", "build", "--images", str(DEMO / "images"), "--catalog",
            str(DEMO / "catalog.json"), "--data-dir", str(data), "--num-jitters", "1", "--workers", "1"]


def rows(data: Path, name: str) -> list[tuple]:
    table = pq.read_table(data / name).select(STABLE_COLUMNS[name])
    return sorted(tuple(str(v) for v in row.values()) for row in table.to_pylist())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("whole")
    subprocess.run(build_command(data), check=True, capture_output=True)
    return data


@pytest.mark.parametrize("stage", ["filter", "embed"])
def test_a_killed_build_resumes_without_redoing_work(tmp_path, uninterrupted, stage):
    data = tmp_path / "data"
    process = subprocess.Popen(build_command(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    parts = data / "parts" / stage
    deadline = time.monotonic() + 120
    while not (parts.exists() and len(list(parts.glob("part-*.parquet"))) >= 2):
        assert process.poll() is None, "build ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint part appeared"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (data / "index").exists()

    result = subprocess.run(build_command(data), capture_output=True, text=True, check=True)
    done_now = int(re.search(rf"{stage}: .*\((\d+) "
                             rf"(?:detected|computed) now", result.stdout).group(1))
    assert 0 < done_now < 48, result.stdout  # the killed run's parts were used, the rest was done now
    for name in STABLE_COLUMNS:
        assert rows(data, name) == rows(uninterrupted, name)
    assert not list(data.rglob("*.tmp")) and not (data / "parts").exists()
    assert "Traceback" not in result.stderr
