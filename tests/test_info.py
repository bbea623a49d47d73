"""`lookalike info` reports the dlib build and the descriptor backend this installation runs."""

import dlib
from click.testing import CliRunner

from lookalike_cli.cli import cli


def test_info_names_dlib_version_blas_and_the_descriptor_backend():
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    blas = "on" if dlib.DLIB_USE_BLAS else "off"
    assert f"dlib {dlib.__version__}: BLAS {blas}" in result.output
    assert "descriptors: numpy (dlib's network on numpy's BLAS, checked against dlib)" in result.output
    assert "make dlib-blas" not in result.output  # only suggested when descriptors fall back to a dlib without BLAS
