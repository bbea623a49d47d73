"""`lookalike info` reports the dlib build this installation runs."""

import dlib
from click.testing import CliRunner

from lookalike_cli.cli import cli


def test_info_names_dlib_version_blas_and_suggests_the_faster_build():
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    blas = "on" if dlib.DLIB_USE_BLAS else "off"
    assert f"dlib {dlib.__version__}: BLAS {blas}" in result.output
    assert ("make dlib-blas" in result.output) == (not dlib.DLIB_USE_BLAS)
