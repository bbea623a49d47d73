"""Shared fixtures: the bundled demo gallery, ../shared's real photos, and one gallery built per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lookalike_cli.config import load_config

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = Path(os.environ.get("LOOKALIKE_SHARED", REPO.parent / "shared"))

# Fast settings for tests: no jitter (10 jitters cost 10x and change nothing that is tested here).
FAST = {"num_jitters": 1, "workers": 2}


def shared_path(*parts: str) -> Path:
    """A path under ../shared (or $LOOKALIKE_SHARED); the test is skipped, saying why, if it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: set LOOKALIKE_SHARED to the folder with congress/ and faces/")
    return path


@pytest.fixture(scope="session")
def fast_config():
    return load_config(None, FAST)


@pytest.fixture(scope="session")
def demo_gallery(tmp_path_factory) -> Path:
    """A copy of the demo gallery's images, one file per person."""
    folder = tmp_path_factory.mktemp("gallery") / "images"
    shutil.copytree(DEMO / "images", folder)
    return folder


@pytest.fixture(scope="session")
def built(tmp_path_factory, demo_gallery, fast_config) -> Path:
    """A data directory built once from the demo gallery (read-only for the tests that use it)."""
    from lookalike_cli import build

    data = tmp_path_factory.mktemp("built")
    build(demo_gallery, data, DEMO / "catalog.json", fast_config)
    return data


@pytest.fixture(scope="session")
def engine(built, fast_config):
    from lookalike_cli.query import Lookalike

    return Lookalike(built, fast_config)
