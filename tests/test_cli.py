"""Every command through Click's runner, on the demo gallery and real dlib models."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from lookalike_cli.cli import cli

from conftest import DEMO, FIXTURES

FAST_OPTIONS = ["--num-jitters", "1", "--workers", "2"]


def run(*args, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def test_help_lists_every_command():
    output = run("--help").output
    for command in ("build", "filter", "embed", "clean", "calibrate", "index", "query"):
        assert command in output
    for command in ("build", "filter", "embed", "clean", "calibrate", "index", "query"):
        assert "--data-dir" in run(command, "--help").output


def test_help_imports_no_heavy_library():
    code = ("import sys; from lookalike_cli.cli import main; sys.argv=['lookalike','--help']\n"
            "try: main()\nexcept SystemExit: pass\n"
            "heavy=[m for m in ('dlib','nmslib','pyarrow','numpy','PIL','ray') if m in sys.modules]\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_stages_one_by_one_then_query(tmp_path, demo_gallery):
    data = tmp_path / "data"
    output = run("filter", "--images", demo_gallery, "--catalog", DEMO / "catalog.json", "--data-dir", data).output
    assert "48 of 48 images accepted" in output
    assert run("embed", "--data-dir", data, "--num-jitters", "1").output.startswith("embed: 48 face descriptors")
    assert run("clean", "--data-dir", data).output.startswith("clean: 48 of 48 photos kept (0 rejected")
    assert "calibrate: nearest other person at" in run("calibrate", "--data-dir", data).output
    assert "index: hnsw over 48 vectors" in run("index", "--data-dir", data, "--backend", "hnsw").output
    table = pq.read_table(data / "embeddings.parquet")
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[128]"
    photo = demo_gallery / "aaron-schock.jpg"
    line = run("query", photo, "--data-dir", data).output.strip()
    assert line.startswith(f"{photo} face 1: Aaron Schock ") and "% (distance 0.0" in line


def test_build_prints_every_stage_and_rejections(tmp_path, demo_gallery):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("aaron-schock", "ami-bera", "barack-obama"):
        (images / f"{name}.jpg").write_bytes((demo_gallery / f"{name}.jpg").read_bytes())
    (images / "coffee.png").write_bytes((FIXTURES / "no_face_coffee_cc0.png").read_bytes())
    (images / "broken.jpg").write_bytes(b"<html>oops</html>")
    output = run("build", "--images", images, "--data-dir", tmp_path / "d", *FAST_OPTIONS).output
    assert "filter: 3 of 5 images accepted" in output
    assert "rejected no_face: 1" in output and "rejected undecodable: 1" in output
    assert "embed: 3 face descriptors of 3 people" in output
    assert "index: exact over 3 vectors" in output


def test_query_json_and_top_k(built, demo_gallery):
    photo = demo_gallery / "ami-bera.jpg"
    answer = json.loads(run("query", photo, "--data-dir", built, "--json", "--top-k", "3").output)
    faces = answer["photos"][0]["faces"]
    assert len(faces) == 1 and len(faces[0]["box"]) == 4
    matches = faces[0]["matches"]
    assert [m["alias"] for m in matches][0] == "ami-bera"
    assert len({m["alias"] for m in matches}) == 3
    assert matches[0]["similarity"] >= matches[1]["similarity"] >= matches[2]["similarity"]
    assert all(0 <= m["similarity"] <= 1 for m in matches)
    assert matches[0]["image"].endswith("ami-bera.jpg")


def test_query_without_a_face_exits_1_and_still_prints_json(built):
    result = CliRunner().invoke(cli, ["query", str(FIXTURES / "no_face_coffee_cc0.png"), "--data-dir",
                                      str(built), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["photos"][0]["faces"] == []
    human = CliRunner().invoke(cli, ["query", str(FIXTURES / "no_face_coffee_cc0.png"), "--data-dir", str(built)])
    assert human.exit_code == 1 and "no face found" in human.output


def test_query_many_photos_in_one_call(built, demo_gallery):
    photos = [demo_gallery / f"{alias}.jpg" for alias in ("ami-bera", "bob-corker", "barack-obama")]
    lines = run("query", *photos, "--data-dir", built).output.splitlines()
    assert [line.split(" face 1: ")[0] for line in lines] == [str(p) for p in photos]


@pytest.mark.parametrize("args, message", [
    (["query", "x.jpg", "--data-dir", "/nonexistent/lookalike"], "does not exist: run `lookalike build`"),
    (["build", "--images", "/nonexistent/images", "--data-dir", "{tmp}/d"], "images folder /nonexistent/images"),
    (["embed", "--data-dir", "{tmp}/d"], "run `lookalike filter"),
    (["filter", "--images", "{tmp}", "--data-dir", "{tmp}/d", "--max-tilt", "100"],
     "filter.max_tilt must be at most 90"),
])
def test_errors_are_one_line_without_traceback(tmp_path, args, message):
    result = CliRunner().invoke(cli, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
