"""`lookalike info` reports the dlib build and the descriptor backend this installation runs."""

import dlib
from click.testing import CliRunner

from lookalike_cli.cli import cli
from lookalike_cli.face.descriptors import descriptor_backend

BACKEND_LINES = {"numpy": "descriptors: numpy (dlib's network on numpy's BLAS, checked against dlib)",
                 "dlib": "descriptors: dlib"}


def test_info_names_dlib_version_blas_and_the_descriptor_backend():
    """Whichever backend this machine runs (numpy once it passes the equivalence guard, dlib otherwise)."""
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    blas = "on" if dlib.DLIB_USE_BLAS else "off"
    assert f"dlib {dlib.__version__}: BLAS {blas}" in result.output
    backend = descriptor_backend()
    assert BACKEND_LINES[backend] in result.output.splitlines()
    # `make dlib-blas` is suggested only when descriptors fall back to a dlib without BLAS
    assert ("make dlib-blas" in result.output) == (backend == "dlib" and not dlib.DLIB_USE_BLAS)
