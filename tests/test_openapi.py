"""The HTTP API's OpenAPI document (lookalike_cli/serving/openapi.json, served as GET /openapi.json) describes every
route, and a schemathesis run against a live `lookalike serve` finds no server error and no answer outside it."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lookalike_cli.answers.recognizer import Recognizer
from lookalike_cli.config import load_config
from lookalike_cli.serving.api import OPENAPI, create_app

from conftest import FAST
from servers import lookalike_serve

SCHEMATHESIS = str(Path(sys.executable).with_name("st"))
# no 5xx, and every status code, content type, header and body as the document says
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance")


def test_the_document_describes_every_route_but_the_pages_files(built):
    app = create_app(Recognizer(built, load_config(None, FAST)), load_config(None, FAST))
    routes = {route.path for route in app.app.routes}
    described = set(json.loads(OPENAPI)["paths"])
    assert described <= routes and routes - described == {"/page.css", "/page.js"}


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_answer_the_document_does_not_describe(built, tmp_path):
    with lookalike_serve(built, "--max-client-photos", "1000") as (url, _):
        assert httpx.get(f"{url}/openapi.json").json() == json.loads(OPENAPI)
        result = subprocess.run([SCHEMATHESIS, "run", f"{url}/openapi.json", "--checks", CHECKS,
                                 "--max-examples", "20", "--seed", "1", "--report-dir", str(tmp_path)],
                                capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
