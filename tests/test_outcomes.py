"""The table of outcomes is whole, and the page takes its messages from it."""

import json
import re
from pathlib import Path

from lookalike_cli.answers.outcomes import OUTCOMES, PAGE_MESSAGES, REJECTIONS, STATUS_OF_HTTP, page_messages, rejection
from lookalike_cli.face.models import FALLBACK_LOOKS
from lookalike_cli.imaging.decode import ImageReason
from lookalike_cli.serving import webpage

PAGE_JS = Path(webpage.__file__).with_name("web") / "page.js"


def test_every_page_key_has_a_message():
    keys = {outcome.page for outcome in OUTCOMES.values() if outcome.page}
    keys |= {page for _, _, page in REJECTIONS.values()}
    assert keys <= set(PAGE_MESSAGES)


def test_an_http_code_without_a_result_names_one_status():
    codes = [outcome.http for outcome in OUTCOMES.values() if not outcome.from_worker and outcome.http]
    assert len(codes) == len(set(codes)) == len(STATUS_OF_HTTP)
    assert STATUS_OF_HTTP[503] == "busy" and STATUS_OF_HTTP[413] == "too_big" and STATUS_OF_HTTP[400] == "bad_request"


def test_every_rejection_reason_has_an_answer():
    for reason in ImageReason.__args__:
        code, reply, page = rejection(reason)
        assert 400 <= code < 500 and reply and page in PAGE_MESSAGES
    assert rejection("too_large")[0] == 413
    assert rejection("undecodable") == (400, OUTCOMES["rejected"].reply, "notImage")


def embedded_data(html: str) -> dict:
    return json.loads(re.search(r'<script id="page-data" type="application/json">(.*?)</script>', html, re.S).group(1))


def test_the_page_holds_the_tables_messages_and_writes_none_of_its_own():
    for language in ("en", "ru"):
        data = embedded_data(webpage.page_text("index.html", language).decode())
        assert data == webpage.page_data(language) and data["fallbackLooks"] == list(FALLBACK_LOOKS)
        assert page_messages(language)["messages"].items() <= data["messages"].items()
    html = (PAGE_JS.parent / "index.html").read_text(encoding="utf-8")
    script = PAGE_JS.read_text(encoding="utf-8")
    sentences = [text[:30] for text in [*PAGE_MESSAGES.values(), *webpage.PAGE_TEXTS.values()] if " " in text]
    assert len(sentences) > 30
    for sentence in sentences:
        assert sentence not in script and sentence not in html  # each said once, in the catalogs


def test_a_message_cannot_end_its_script_element(monkeypatch):
    monkeypatch.setitem(PAGE_MESSAGES, "failed", "</script><script>alert(1)</script>")
    html = webpage.page_text("index.html").decode()
    embedded = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    assert json.loads(embedded)["messages"]["failed"] == "</script><script>alert(1)</script>"
