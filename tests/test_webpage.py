"""The web page of `lookalike serve` and the gallery's photos by URL: HTTP tests of the routes, and a real browser
(Debian's headless Chromium) using the page against a real `lookalike serve` on 127.0.0.1 with the demo gallery."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import json
import os
import re
import shutil
import sys
import threading
import unicodedata
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from lookalike_cli import build
from lookalike_cli.answers.render import thumbnail_jpeg
from lookalike_cli.config import ImageConfig
from lookalike_cli.serving.webpage import PAGE_FILES, THUMBNAIL_SIDE, PeoplePhotos, person_photo_path

import hostile
from browser import chromium, full_page_screenshot, wait_for
from conftest import DEMO, FIXTURES, REPO, encoded, hard_selfie, run
from helpers import api
from servers import lookalike_serve

NO_FACE = "No face was found in this photo."
NOT_AN_IMAGE = "This file is not a photo that can be opened."
TOO_LARGE = "This photo is too large for the server."
TOO_SLOW = "Your photo took too long to answer."
HARD_TO_SEE = "Your face was small or unclear in this photo, so it was looked for twice;"


@pytest.fixture(scope="module")
def client(built):
    with api(built, top_k=3) as (client, _):
        yield client


def strings(value) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [key, *strings(item)]]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return [value] if isinstance(value, str) else []


def assert_no_path(answer: dict, *folders: Path) -> None:
    """No string of a JSON answer names a file of this machine: no `image` key, no folder, nothing absolute but
    the photo URLs."""
    for text in strings(answer):
        assert text != "image" and not any(str(folder) in text for folder in folders), text
        assert not text.startswith("/") or re.fullmatch(r"/people/[^/]+/photo", text), text


def test_the_page_and_its_files_are_served_with_a_policy_of_this_server_only(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"].startswith("default-src 'self';")
    html = page.text
    assert '<input type="file" id="camera" accept="image/*" capture="user"' in html
    assert '<label for="camera"' in html and '<label for="photo"' in html and 'aria-live="polite"' in html
    assert "never writes it to disk" in html
    for path, (name, media_type) in PAGE_FILES.items():
        response = client.get(path)
        assert response.headers["content-type"] == media_type
        assert "://" not in response.text, f"{name} names another server"  # nothing to load from elsewhere
        assert client.get(path, headers={"if-none-match": response.headers["etag"]}).status_code == 304
        assert client.get(path, headers={"if-none-match": "*"}).status_code == 304


def test_answers_give_photo_urls_of_bounded_jpegs_and_no_path(client, built, demo_gallery):
    answer = client.post("/query", content=(DEMO / "selfie.jpg").read_bytes()).json()
    matches = answer["photos"][0]["faces"][0]["matches"]
    assert len(matches) == 3 and all(set(match) == {"alias", "name", "distance", "similarity", "photo_url"}
                                     for match in matches)
    for match in matches:
        photo = client.get(match["photo_url"])
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
        assert "max-age" in photo.headers["cache-control"]
        original = Image.open(demo_gallery / f"{match['alias']}.jpg")
        thumbnail = Image.open(io.BytesIO(photo.content))
        assert thumbnail.format == "JPEG" and thumbnail.size == original.size  # smaller than the bound: as it is
        again = client.get(match["photo_url"], headers={"if-none-match": photo.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    coffee = (FIXTURES / "no_face_coffee_cc0.png").read_bytes()
    answers = [answer, client.post("/query?format=png", content=coffee).json(),
               client.post("/query", content=b"not a photo").json(), client.get("/stats").json(),
               client.post("/query", files={"photo": ("me.jpg", (DEMO / "selfie.jpg").read_bytes())}).json(),
               client.get("/people/nobody/photo").json()]
    for sent in answers:
        assert_no_path(sent, built, demo_gallery, REPO)


@pytest.fixture(scope="module")
def large_photos(tmp_path_factory, fast_config) -> tuple[Path, Path]:
    """A gallery of three people whose photos are larger than a thumbnail (the demo's, enlarged): its images
    folder and its data directory."""
    images = tmp_path_factory.mktemp("large") / "images"
    images.mkdir()
    for alias in ("ami-bera", "bob-corker", "barack-obama"):
        Image.open(DEMO / "images" / f"{alias}.jpg").resize((900, 1100), Image.LANCZOS).save(images / f"{alias}.jpg")
    data = images.parent / "data"
    build(images, data, DEMO / "catalog.json", fast_config)
    return images, data


@pytest.mark.slow
def test_a_large_gallery_photo_is_shrunk_to_the_thumbnail_bound(large_photos):
    _, data = large_photos
    with api(data) as (client, _):
        photo = client.get("/people/bob-corker/photo")
    thumbnail = Image.open(io.BytesIO(photo.content))
    assert photo.headers["content-type"] == "image/jpeg" and thumbnail.height == THUMBNAIL_SIDE
    assert thumbnail.width / thumbnail.height == pytest.approx(900 / 1100, abs=0.005)


def test_thumbnails_keep_the_shape_and_never_grow():
    wide = np.zeros((300, 1200, 3), np.uint8)
    assert Image.open(io.BytesIO(thumbnail_jpeg(wide, 320))).size == (320, 80)
    small = np.zeros((100, 50, 3), np.uint8)
    assert Image.open(io.BytesIO(thumbnail_jpeg(small, 320))).size == (50, 100)


@pytest.mark.parametrize("path", [
    "/people/..%2f..%2fetc/photo", "/people/..%2F..%2F..%2F..%2Fetc%2Fpasswd/photo", "/people/%2e%2e/photo",
    "/people/../../../etc/passwd", "/people/%2fetc%2fpasswd/photo", "/people/ami-bera%2f..%2fami-bera/photo",
    "/people/ami-bera.jpg/photo", "/people/ami-bera%00/photo", "/people/..%5c..%5cwindows/photo",
    "/people/ami-bera/photo/../../../gallery.parquet", "/people/nobody/photo", "/people//photo",
])
def test_nothing_but_a_gallery_person_is_reached(client, path):
    """Raw paths, sent as they are (http.client normalises nothing)."""
    host = httpx.URL(str(client.base_url))
    connection = http.client.HTTPConnection(host.host, host.port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 404 and response.getheader("content-type") != "image/jpeg", (path, body[:200])
    assert b"root:" not in body and b"PAR1" not in body
    assert client.get("/people/ami-bera/photo").status_code == 200  # the real one is there


@pytest.mark.slow
def test_people_photos_are_decoded_in_a_worker_under_the_decode_time_limit(tmp_path):
    """A gallery photo that takes long to decode (the slowest JPEG the bounds let through) is stopped at the decode
    timeout in the worker, which is replaced; the server's own process never decodes it."""
    slow, portrait = tmp_path / "slow.jpg", DEMO / "images" / "ami-bera.jpg"
    slow.write_bytes(hostile.slow_jpeg())
    people = PeoplePhotos(ImageConfig(decode_timeout=hostile.DECODE_TIMEOUT))

    async def both() -> tuple[bytes | None, bytes | None]:
        return await people.thumbnail(str(slow)), await people.thumbnail(str(portrait))

    try:
        stopped, shown = asyncio.run(both())
        assert stopped is None and people.pool.replaced == 1  # killed at the time limit, not decoded to the end
        thumbnail = Image.open(io.BytesIO(shown))
        assert thumbnail.format == "JPEG" and max(thumbnail.size) <= THUMBNAIL_SIDE  # the next photo is made
        assert os.getpid() not in people.pool.worker_pids()
    finally:
        people.close()


def test_an_alias_typed_decomposed_names_the_same_person():
    """The catalog keeps aliases composed (NFC); a URL may carry them decomposed (NFD), as some systems type them."""
    photos = {unicodedata.normalize("NFC", "tony-cárdenas"): "/gallery/tony.jpg"}
    assert person_photo_path(photos, unicodedata.normalize("NFD", "tony-cárdenas")) == "/gallery/tony.jpg"
    assert person_photo_path(photos, "tony-cardenas") is None


@pytest.mark.slow
def test_no_page_serves_the_api_alone(built):
    with api(built, page=False) as (client, _):
        assert client.get("/").status_code == 404 and client.get("/page.js").status_code == 404
        assert client.get("/people/ami-bera/photo").status_code == 200  # the answers' photo_url still work
        assert client.post("/query", content=(DEMO / "selfie.jpg").read_bytes()).status_code == 200


@contextlib.contextmanager
def files_opened_for_writing():
    """The paths this process opens to write (or create) while the block runs, through Python's audit hooks
    (a temporary file included: tempfile opens its folder with O_TMPFILE)."""
    opened: list[str] = []
    watching = threading.Event()

    def audit(event: str, args: tuple) -> None:
        if watching.is_set() and event == "open" and isinstance(args[2], int) and \
                args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            opened.append(str(args[0]))
    sys.addaudithook(audit)  # a hook cannot be removed: it is switched off instead
    watching.set()
    try:
        yield opened
    finally:
        watching.clear()


@pytest.mark.slow
def test_uploads_are_never_written_to_disk(built):
    """Starlette writes a multipart file over 1 MB to a temporary file: the server keeps it in memory."""
    large = encoded(Image.open(DEMO / "images" / "ami-bera.jpg").resize((1500, 1833), Image.LANCZOS), "PNG")
    assert len(large) > 1_100_000
    with api(built, max_body_bytes=10_000_000) as (client, _):
        with files_opened_for_writing() as opened:
            as_file = client.post("/query", files={"photo": ("me.png", large, "image/png")})
            as_body = client.post("/query", content=large)
    assert opened == []
    for response in (as_file, as_body):
        assert response.json()["photos"][0]["faces"][0]["matches"][0]["alias"] == "ami-bera"


# The page in a real browser, against `lookalike serve`.

@pytest.fixture(scope="module")
def page(built):
    with lookalike_serve(built, "--top-k", "3") as (url, _):
        yield url


def choose(browser, photo: Path) -> None:
    browser.find_element("id", "photo").send_keys(str(photo))


def message_is(browser, sentence: str) -> str:
    return wait_for(browser, lambda b: b.find_element("id", "message").text.startswith(sentence) and
                    b.find_element("id", "message").text, f"the sentence {sentence!r}")


def screenshot(browser, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot in the test's folder (and in $LOOKALIKE_SCREENSHOTS, when set: `docs` for the
    pictures of docs/serve.md)."""
    path = full_page_screenshot(browser, tmp_path / name)
    if os.environ.get("LOOKALIKE_SCREENSHOTS"):
        shutil.copyfile(path, REPO / os.environ["LOOKALIKE_SCREENSHOTS"] / name)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["phone", "desktop"])
def test_a_person_uploads_a_selfie_in_a_browser_and_sees_who_they_look_like(page, built, layout, tmp_path):
    best = json.loads(run("query", DEMO / "selfie.jpg", "--data-dir", built, "--json").output)
    best = best["photos"][0]["faces"][0]["matches"][0]
    with chromium(layout) as browser:
        browser.get(f"{page}/")
        camera_shown = browser.execute_script("return !document.getElementById('camera-choice').hidden")
        assert camera_shown == (layout == "phone")  # the front camera where there is one, a touch screen
        switch = browser.execute_script("return [...document.querySelectorAll('#languages a')].map(a => a.lang)")
        assert switch == ["en", "de", "ru"]
        for _ in range(len(switch) + 1):  # the keyboard reaches the language switch, then the first choice
            ActionChains(browser).send_keys(Keys.TAB).perform()
        assert browser.execute_script("return document.activeElement.id") == ("camera" if camera_shown else "photo")
        answered = httpx.get(f"{page}/stats").json()["requests"]["total"]
        choose(browser, DEMO / "selfie.jpg")
        wait_for(browser, lambda b: b.execute_script(
            "return !document.getElementById('answer-save').hidden && [...document.querySelectorAll('#results img')]"
            ".every(image => image.complete)"), "the answer and its pictures")
        assert httpx.get(f"{page}/stats").json()["requests"]["total"] == answered + 1  # the picture came with it
        shown = browser.execute_script("""return {
            names: [...document.querySelectorAll('#faces .best .name')].map(e => e.textContent),
            photoWidths: [...document.querySelectorAll('#faces img.person')].map(e => e.naturalWidth),
            alts: [...document.querySelectorAll('#results img')].map(e => e.alt),
            crop: document.querySelector('#faces canvas.crop').getAttribute('aria-label'),
            focused: document.activeElement.id,
            answerWidth: document.getElementById('answer-picture').naturalWidth}""")
        assert shown["names"] == [best["name"]]
        assert len(shown["photoWidths"]) == 3 and all(width > 0 for width in shown["photoWidths"])
        assert shown["alts"][0] == f"Photo of {best['name']}" and all(shown["alts"])
        assert shown["crop"] == "Your face" and shown["focused"] == "results-title" and shown["answerWidth"] > 0
        assert screenshot(browser, tmp_path, f"page-{layout}.png").stat().st_size > 10_000

        hard = tmp_path / "hard-selfie.png"
        hard.write_bytes(hard_selfie())
        choose(browser, hard)
        message_is(browser, f"Here is who you look like. {HARD_TO_SEE}")  # the face found by the fallback
        choose(browser, FIXTURES / "no_face_coffee_cc0.png")
        message_is(browser, NO_FACE)
        text = tmp_path / "notes.txt"
        text.write_text("a shopping list, not a photo\n")
        choose(browser, text)
        message_is(browser, NOT_AN_IMAGE)
        assert browser.execute_script("return document.getElementById('results').hidden")
        resources = browser.execute_script("return [...performance.getEntriesByType('navigation'), "
                                           "...performance.getEntriesByType('resource')].map(e => e.name)")
    assert {f"{page}/", f"{page}/page.js", f"{page}/query?picture=1&language=en"} <= set(resources)
    assert all(name.startswith(f"{page}/") for name in resources), resources  # nothing from anywhere else


@pytest.mark.slow
def test_the_page_says_too_large_and_too_slow_in_plain_sentences(built, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (1400, 1400, 3), dtype=np.uint8)
    (tmp_path / "noise.png").write_bytes(encoded(Image.fromarray(noise), "PNG"))
    with lookalike_serve(built, "--max-body-bytes", "300000", "--request-timeout", "0.01") as (url, _), \
            chromium("desktop") as browser:
        browser.get(f"{url}/")
        choose(browser, tmp_path / "noise.png")  # over 300 kB even shrunk to 1280 pixels
        message_is(browser, TOO_LARGE)
        choose(browser, DEMO / "selfie.jpg")  # not answered in 0.01 s
        message_is(browser, TOO_SLOW)
        assert "{" not in browser.find_element("id", "status").text  # never the JSON


# The page in the browser's language.

def test_the_page_speaks_the_language_asked_for_and_falls_back_to_the_default(client):
    def page_language(**headers_and_params) -> tuple[str, dict]:
        params = {"language": headers_and_params.pop("language")} if "language" in headers_and_params else {}
        page = client.get("/", params=params, headers=headers_and_params)
        assert page.status_code == 200 and page.headers["vary"] == "Accept-Language"
        data = json.loads(re.search(r'<script id="page-data" type="application/json">(.*?)</script>', page.text,
                                    re.S).group(1))
        assert page.headers["content-language"] == data["language"] and f'<html lang="{data["language"]}">' in page.text
        return data["language"], data

    assert page_language()[0] == "en"
    language, russian = page_language(**{"accept-language": "ru-RU,ru;q=0.9,en-US;q=0.8"})
    assert language == "ru" and russian["chosenBy"] == "header" and russian["messages"]["title"] == "Кто твой двойник?"
    assert russian["languages"] == {"en": "English", "de": "Deutsch", "ru": "Русский"}
    assert page_language(**{"accept-language": "fr, de;q=0.5"})[0] == "de"
    assert page_language(**{"accept-language": "ru", "language": "de"})[0] == "de"  # the switch wins
    for strange in ("x" * 5000, "../../etc/passwd", "ru\u202e", "*", ";q=;,,,", "de;q=NaN"):
        language, data = page_language(**{"accept-language": strange.encode(), "language": strange})
        assert language == "en" and data["chosenBy"] == "default", strange
    german = client.get("/messages/de.json")
    assert german.status_code == 200 and german.json()["messages"]["takeSelfie"] == "Selfie machen"
    assert german.json()["messages"]["noFace"].startswith("Auf diesem Foto wurde kein Gesicht gefunden.")
    for unknown in ("xx", "..%2Fen", "en.json%00", "e" * 3000):
        assert client.get(f"/messages/{unknown}.json").status_code == 404


def test_answers_name_people_as_the_catalog_writes_them_in_the_language(client):
    answers = {}
    for language in ("ru", "de", "klingon" * 100, None):
        params = {"language": language} if language else {}
        response = client.post("/query", params=params, content=(DEMO / "selfie.jpg").read_bytes())
        assert response.status_code == 200
        answers[language] = response.json()["photos"][0]["faces"][0]["matches"]
    catalog = {entry["alias"]: entry for entry in json.loads((DEMO / "catalog.json").read_text())}
    assert [match["name"] for match in answers["ru"]] == [catalog[m["alias"]]["names"]["ru"] for m in answers["ru"]]
    assert all(re.search("[А-я]", match["name"]) for match in answers["ru"])
    assert answers["de"] == answers[None] == answers["klingon" * 100]  # no German names: the catalog's name
    assert [match["name"] for match in answers["de"]] == [catalog[m["alias"]]["name"] for m in answers["de"]]


@pytest.mark.slow
def test_serve_language_sets_the_pages_language_for_a_browser_that_asks_for_no_other(built):
    with lookalike_serve(built, "--language", "ru") as (url, _):
        for headers in ({}, {"accept-language": "fr-FR,fr;q=0.9"}):
            page = httpx.get(f"{url}/", headers=headers)
            assert '<html lang="ru">' in page.text and "Кто твой двойник?" in page.text, headers
        assert '<html lang="de">' in httpx.get(f"{url}/", headers={"accept-language": "de"}).text


def english_messages() -> list[re.Pattern]:
    """Every English message of the catalogs' source, as a pattern of a text that says it ({fields}: anything)."""
    from babel.messages.pofile import read_po

    from lookalike_cli.language import LOCALES

    with (LOCALES / "messages.pot").open("rb") as file:
        ids = [message.id for message in read_po(file) if message.id]
    return [re.compile(".*?".join(re.escape(part) for part in re.split(r"\{\w*\}", message.strip())), re.S)
            for message in ids]


VISIBLE_TEXTS = """
const texts = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode, element = node.parentElement;
  if (node.textContent.trim() && element.checkVisibility() && !element.closest("#languages")) {
    texts.push(node.textContent.trim());
  }
}
for (const element of document.querySelectorAll("[alt], [aria-label]")) {
  if (element.checkVisibility()) texts.push(element.alt || element.getAttribute("aria-label"));
}
return texts.filter(Boolean).concat([document.title]);
"""


@pytest.mark.slow
@pytest.mark.parametrize(("locale", "layout"), [("ru-RU", "phone"), ("de-DE", "desktop")])
def test_the_page_in_russian_and_german_shows_no_english_sentence(page, built, locale, layout, tmp_path):
    """Every visible text of the page, before and after an answer, compared with the English catalog; the answer
    names the person as the catalog writes them in the language (Cyrillic in Russian)."""
    language = locale.split("-")[0]
    catalog = {entry["alias"]: entry for entry in json.loads((DEMO / "catalog.json").read_text())}
    english = english_messages()
    with chromium(layout, locale) as browser:
        browser.get(f"{page}/")
        wait_for(browser, lambda b: b.find_element("id", "intro").text, "the page's words")
        before = browser.execute_script(VISIBLE_TEXTS)
        choose(browser, DEMO / "selfie.jpg")
        wait_for(browser, lambda b: b.execute_script(
            "return !document.getElementById('answer-save').hidden && [...document.querySelectorAll('#results img')]"
            ".every(image => image.complete)"), "the answer and its pictures")
        after = browser.execute_script(VISIBLE_TEXTS)
        shown = browser.execute_script("""return {
            lang: document.documentElement.lang,
            names: [...document.querySelectorAll('#faces .name')].map(e => e.textContent),
            aliases: [...document.querySelectorAll('#faces img.person')].map(e => decodeURIComponent(
                new URL(e.src).pathname.split('/')[2])),
            switch: [...document.querySelectorAll('#languages a')].map(e => [e.lang, e.textContent])}""")
        assert screenshot(browser, tmp_path, f"page-{language}-{layout}.png").stat().st_size > 10_000
    assert shown["lang"] == language and len(before) >= 6 and len(after) > len(before)
    assert ["ru", "Русский"] in shown["switch"] and ["de", "Deutsch"] in shown["switch"]
    english_left = [text for text in before + after if any(pattern.fullmatch(text) for pattern in english)]
    assert english_left == []
    expected = [catalog[alias].get("names", {}).get(language, catalog[alias]["name"]) for alias in shown["aliases"]]
    assert shown["names"] == expected and len(expected) == 3
    if language == "ru":
        assert all(re.search("[А-я]", name) for name in shown["names"])


@pytest.mark.slow
def test_the_language_chosen_with_the_switch_is_remembered_over_the_browsers(page):
    """An English browser follows the switch to Russian; back on / (its Accept-Language English), the page takes
    the Russian words from /messages/ru.json."""
    with chromium("desktop") as browser:
        browser.get(f"{page}/")
        assert browser.find_element("tag name", "h1").text == "Who do you look like?"
        browser.find_element("css selector", '#languages a[lang="ru"]').click()
        wait_for(browser, lambda b: b.find_element("tag name", "h1").text == "Кто твой двойник?", "Russian")
        browser.get(f"{page}/")
        wait_for(browser, lambda b: b.execute_script("return document.documentElement.lang") == "ru" and
                 b.find_element("tag name", "h1").text == "Кто твой двойник?", "Russian, remembered")
        assert browser.find_element("css selector", "#languages [aria-current]").text == "Русский"
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert f"{page}/messages/ru.json" in resources
