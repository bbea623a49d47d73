"""Every command through Click's runner, on the demo gallery and real dlib models."""

import json
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from lookalike_cli.cli import cli

from conftest import DEMO, FIXTURES, run

FAST_OPTIONS = ["--num-jitters", "1", "--workers", "2"]


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


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_exports_are_functions_even_after_their_modules_are_imported():
    import importlib

    import lookalike_cli

    for name, module in lookalike_cli._EXPORTS.items():
        importlib.import_module(f"lookalike_cli.{module}")
        assert getattr(lookalike_cli, name) is getattr(importlib.import_module(f"lookalike_cli.{module}"), name)
    from lookalike_cli import build, calibrate

    assert callable(build) and callable(calibrate) and not hasattr(calibrate, "__path__")


def test_the_python_api_takes_the_data_directory_lock_too(built, tmp_path, fast_config):
    """A Python caller of a stage gets the same one-line refusal as the command when another run holds the lock."""
    import fcntl

    from lookalike_cli import LookalikeError, calibrate

    data = tmp_path / "data"
    shutil.copytree(built, data)
    with open(data / ".lock", "a+") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        holder.write("pid 4242 (lookalike build)")
        holder.flush()
        with pytest.raises(LookalikeError, match="is in use by pid 4242"):
            calibrate(data, fast_config)
    calibrate(data, fast_config)  # free again


IMAGE_READERS = ("filter", "embed", "build", "query", "serve", "bot", "eval")


@pytest.mark.parametrize("command", IMAGE_READERS)
def test_every_command_that_reads_images_offers_the_image_settings(command):
    output = run(command, "--help").output
    for option in ("--max-image-pixels", "--max-decoded-bytes", "--decode-timeout", "--image-formats"):
        assert option in output


@pytest.mark.parametrize("command, offered", [("build", True), ("filter", True), ("embed", True), ("eval", True),
                                               ("index", False), ("query", False), ("serve", True), ("bot", True)])
def test_only_the_commands_with_dlib_workers_offer_the_executor(command, offered):
    output = run(command, "--help").output
    assert ("--executor" in output, "--ray-address" in output) == (offered, offered)


@pytest.mark.slow
def test_the_image_settings_reach_embed_as_they_reach_filter(tmp_path):
    """The seam: a photo over the default pixel bound that filter accepts with an option is embedded with the
    same option, and a config file's bound applies to both."""
    images = tmp_path / "images"
    images.mkdir()
    for alias in ("ami-bera", "bob-corker"):
        (images / f"{alias}.jpg").write_bytes((DEMO / "images" / f"{alias}.jpg").read_bytes())
    portrait = Image.open(DEMO / "images" / "barack-obama.jpg")
    portrait.resize((portrait.width * 2, portrait.height * 2)).save(images / "barack-obama.jpg")  # 247,500 px
    data = tmp_path / "data"
    bound = ["--max-image-pixels", "250000"]
    assert "3 of 3 images accepted" in run("filter", "--images", images, "--data-dir", data, "--workers", "1",
                                           *bound).output
    lower = run("embed", "--data-dir", data, "--num-jitters", "1", "--workers", "1", "--max-image-pixels", "100000")
    assert "2 face descriptors" in lower.output and "1 failed" in lower.output  # embed reads the setting...
    same = run("embed", "--data-dir", data, "--num-jitters", "1", "--workers", "1", *bound).output
    assert "3 face descriptors of 3 people (1 computed now, 0 failed)" in same  # ...and accepts what filter did

    config = tmp_path / "lookalike.toml"
    config.write_text("[image]\nmax_image_pixels = 100000\n")
    filtered = run("filter", "--images", images, "--data-dir", data, "--workers", "1", "--config", config).output
    assert "2 of 3 images accepted" in filtered and "rejected too_large: 1" in filtered
    assert "embed: 2 face descriptors" in run("embed", "--data-dir", data, "--num-jitters", "1", "--workers", "1",
                                               "--config", config).output


def test_a_photo_from_standard_input_is_answered_and_capped(built, tmp_path):
    from click.testing import CliRunner

    photo = (DEMO / "images" / "bob-corker.jpg").read_bytes()
    out = tmp_path / "answer.png"
    result = CliRunner().invoke(cli, ["query", "-", "--data-dir", str(built), "--json", "--out", str(out)],
                                input=photo)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["photos"][0]["faces"][0]["matches"][0]["alias"] == "bob-corker"
    assert out.read_bytes().startswith(b"\x89PNG")
    result = CliRunner().invoke(cli, ["query", "-", "--data-dir", str(built), "--max-file-bytes", "1000"],
                                input=photo)
    assert result.exit_code == 1
    assert result.output.strip() == "-: cannot read the image (too_large: the file is over the limit of 1000 bytes)"
