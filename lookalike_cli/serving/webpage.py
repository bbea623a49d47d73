"""The web page of ``lookalike serve``, and the gallery's photos by URL.

``GET /`` is a page for people (``web/index.html``, ``web/page.css`` and ``web/page.js``: package data, no CDN,
no build step, nothing loaded from elsewhere): they pick a photo or take a selfie, the browser shrinks it and
posts it to ``/query``, and the page shows each face beside its matches, then the answer picture. Its words are
in the language of ``?language=``, else the browser's ``Accept-Language``, else ``serve.language`` (then the page
tries ``navigator.languages``); ``GET /messages/<language>.json`` gives them in another (``page_data``).

``GET /people/<alias>/photo`` is a person's representative photo as a JPEG of at most ``THUMBNAIL_SIDE`` pixels,
with an ETag, made by a worker process under the image policy (``PeoplePhotos``). The alias is looked up in the
published gallery's rows, never joined to a path: no other file can be reached. Answers sent over HTTP give each match's ``photo_url`` instead of its path on this machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import unicodedata
from collections import OrderedDict
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..answers.outcomes import LOOKS_LIKE, page_messages
from ..answers.recognizer import Busy
from ..answers.render import thumbnail_jpeg
from ..config import Config, ImageConfig
from ..errors import Failure
from ..face.models import FALLBACK_LOOKS
from ..gallery.generations import published_photos
from ..imaging.decode import ImageRejected, read_image
from ..imaging.gallery import printable_path
from ..language import (
    LANGUAGES,
    N_,
    SOURCE_LANGUAGE,
    accepted_language,
    known_language,
    language_name,
    translate,
)
from ..runtime.pool import ProcessPool

if TYPE_CHECKING:
    from ..answers.recognizer import Recognizer

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = 320  # pixels, longer side
CACHED_THUMBNAILS = 1024  # thumbnails kept in memory (a few tens of kB each)
THUMBNAIL_WORKERS = 1  # processes that make people's photos (a gallery's photos were read once at build time)
THUMBNAIL_QUEUE = 16  # people's photos waiting to be made; more are answered 503
PHOTO_MAX_AGE = 3600  # seconds a browser may reuse a thumbnail before asking again (with its ETag)
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
              "/page.css": ("page.css", "text/css; charset=utf-8"),
              "/page.js": ("page.js", "text/javascript; charset=utf-8")}
# The page may load from and talk to this server only; blob: is the user's own photo and the answer picture.
# The page's own words, by the key page.js and index.html (data-text) give them; the outcomes' are in outcomes.py.
PAGE_TEXTS = {
    "title": N_("Who do you look like?"),
    "intro": N_("Take a selfie or choose a photo, and see which of the people in this gallery you look like most."),
    "introPeople": N_("Take a selfie or choose a photo, and see who you look like most. People in this gallery: "
                      "{people}."),
    "language": N_("Language"),
    "yourPhoto": N_("Your photo"),
    "takeSelfie": N_("Take a selfie"),
    "choosePhoto": N_("Choose a photo"),
    "dropHint": N_("or drop a photo anywhere on this page"),
    "privacy": N_("Your photo is made smaller on your device and sent only to this server, which looks at it in "
                  "memory and never writes it to disk. Nothing is kept once you have your answer."),
    "gettingReady": N_("Getting your photo ready…"),
    "sending": N_("Sending your photo…"),
    "comparing": N_("Looking for faces and comparing them with the people in the gallery…"),
    "hereIsOne": N_("Here is who you look like."),
    "hereAreSeveral": N_("Faces found: {count}. Here is who each looks like, from the left."),
    "yourLookalike": N_("Your lookalike"),
    "yourLookalikes": N_("Your lookalikes"),
    "yourFace": N_("Your face"),
    "faceOf": N_("Face {number} of {count}, from the left"),
    "faceNumber": N_("Face {number}"),
    "you": N_("You"),
    "photoOf": N_("Photo of {name}"),
    "looksLike": LOOKS_LIKE,
    "faceLooksLike": N_("This face looks like {name}: {percent} alike."),
    "alsoAlike": N_("Also alike"),
    "answerCaption": N_("The answer as a picture, to save or share."),
    "answerAlt": N_("The answer as a picture: each face beside its lookalike's photo, with the name and percent."),
    "savePicture": N_("Save the picture"),
    "tryAnother": N_("Try another photo"),
}
CHOSEN_BY = ("query", "header", "default")  # what chose the page's language: ?language=, Accept-Language, default
PAGE_HEADERS = {"content-security-policy": "default-src 'self'; img-src 'self' blob: data:; base-uri 'none'; "
                                           "form-action 'none'; frame-ancestors 'none'",
                "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def photo_url(alias: str) -> str:
    """Where the HTTP API serves a person's photo (relative to the server)."""
    return f"/people/{quote(alias, safe='')}/photo"


def revalidated(request: Request, body: bytes, media_type: str, cache_control: str,
                more_headers: dict[str, str] | None = None) -> Response:
    """``body`` with an ETag of its content, or 304 Not Modified when the client holds it already."""
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"etag": etag, "cache-control": cache_control, **PAGE_HEADERS, **(more_headers or {})}
    held = request.headers.get("if-none-match", "")
    if etag in held or held.strip() == "*":  # "*": any version the client holds
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def person_photo_path(photos: dict[str, str], alias: str) -> str | None:
    """The photo of the person ``alias`` names, typed composed or decomposed (the catalog keeps aliases in NFC)."""
    return photos.get(unicodedata.normalize("NFC", alias))


def page_data(language: str, chosen_by: str = "query") -> dict:
    """What the page says in ``language``: its words and the outcomes' (``outcomes.page_messages``), the
    languages it can switch to (each named in itself), what chose this one (CHOSEN_BY), and the detection
    fallback's looks."""
    data = page_messages(language)
    data["messages"] |= {key: translate(language, text) for key, text in PAGE_TEXTS.items()}
    return dict(data, language=language, chosenBy=chosen_by, fallbackLooks=list(FALLBACK_LOOKS),
                languages={code: language_name(code) for code in LANGUAGES})


def page_text(name: str, language: str = SOURCE_LANGUAGE, chosen_by: str = "query") -> bytes:
    """A file of the page; ``index.html`` with its language and ``page_data`` in it."""
    body = (resources.files(__package__) / "web" / name).read_bytes()
    if name == "index.html":
        data = json.dumps(page_data(language, chosen_by), ensure_ascii=False)
        data = data.replace("</", "<\\/")  # stays in its <script>
        body = body.replace(b"PAGE_LANGUAGE", language.encode()).replace(b"PAGE_DATA", data.encode())
    return body


def page_language(request: Request, default: str) -> tuple[str, str]:
    """The page's language and what chose it (CHOSEN_BY): a known ``?language=``, else the browser's
    ``Accept-Language``, else ``default``."""
    asked = known_language(request.query_params.get("language"))
    if asked:
        return asked, "query"
    accepted = accepted_language(request.headers.get("accept-language"))
    return (accepted, "header") if accepted else (default, "default")


def page_file(body: bytes, media_type: str):
    async def endpoint(request: Request) -> Response:
        return revalidated(request, body, media_type, "no-cache")
    return endpoint


def index_page(default: str):
    """``GET /``: index.html in the language ``page_language`` chooses."""
    bodies = {(language, chosen_by): page_text("index.html", language, chosen_by)
              for language in LANGUAGES for chosen_by in CHOSEN_BY}

    async def endpoint(request: Request) -> Response:
        language, chosen_by = page_language(request, default)
        return revalidated(request, bodies[language, chosen_by], PAGE_FILES["/"][1], "no-cache",
                           {"vary": "Accept-Language", "content-language": language})
    return endpoint


def page_messages_file():
    """``GET /messages/<language>.json``: ``page_data`` of a language of LANGUAGES."""
    bodies = {language: json.dumps(page_data(language), ensure_ascii=False).encode() for language in LANGUAGES}

    async def endpoint(request: Request) -> Response:
        body = bodies.get(request.path_params["language"])
        if body is None:
            return JSONResponse({"error": f"the page speaks {', '.join(LANGUAGES)}"}, status_code=404)
        return revalidated(request, body, "application/json", "no-cache")
    return endpoint


def thumbnail_of(path: str, policy: ImageConfig) -> bytes | None:
    """In a worker: a gallery photo as a JPEG of at most THUMBNAIL_SIDE pixels, read under the image policy (its
    decode time limit too); None when it cannot be read."""
    try:
        return thumbnail_jpeg(read_image(path, policy).pixels, THUMBNAIL_SIDE)
    except ImageRejected as exc:
        log.warning("cannot show the photo %s: %s", printable_path(Path(path)), exc)
        return None


class PeoplePhotos:
    """People's photos as the answers show them: made from the gallery's images by a worker process of their own,
    under the image policy and its decode time limit, never in the server's process (a photo that passed the build
    can still take seconds to decode); the last CACHED_THUMBNAILS are kept, at most THUMBNAIL_QUEUE wait."""

    def __init__(self, policy: ImageConfig):
        self.policy = policy
        self.pool = ProcessPool(THUMBNAIL_WORKERS)
        self.cached: OrderedDict[str, bytes | None] = OrderedDict()
        self.pending = 0

    async def thumbnail(self, path: str) -> bytes | None:
        """The thumbnail of the photo at ``path`` (None: it cannot be shown); Busy when THUMBNAIL_QUEUE wait."""
        if path in self.cached:
            self.cached.move_to_end(path)
            return self.cached[path]
        if self.pending >= THUMBNAIL_QUEUE:
            raise Busy("people's photos are being made")
        self.pending += 1
        try:
            body = await asyncio.wrap_future(self.pool.submit(thumbnail_of, path, self.policy))
        except Failure as failure:  # over the decode time limit, or its worker died: replaced
            log.warning("cannot show the photo %s: %s", printable_path(Path(path)), failure)
            body = None
        finally:
            self.pending -= 1
        self.cached[path] = body
        if len(self.cached) > CACHED_THUMBNAILS:
            self.cached.popitem(last=False)
        return body

    def close(self) -> None:
        self.pool.close()


def page_routes(recognizer: Recognizer, config: Config, people: PeoplePhotos) -> list[Route]:
    """The routes of people's photos (of the generation the recognizer serves), and of the page unless
    ``serve.page`` is off."""

    @lru_cache(maxsize=2)
    def photos(generation: str) -> dict[str, str]:
        return published_photos(recognizer.data, generation)

    async def person_photo(request: Request) -> Response:
        path = person_photo_path(photos(recognizer.generation), request.path_params["alias"])
        if path is None:
            return JSONResponse({"error": "there is no such person in the gallery"}, status_code=404)
        try:
            body = await people.thumbnail(path)
        except Busy as exc:
            return JSONResponse({"error": f"busy: {exc}, try again later"}, status_code=503,
                                headers={"Retry-After": "1"})
        if body is None:
            return JSONResponse({"error": "this person's photo cannot be read"}, status_code=404)
        return revalidated(request, body, "image/jpeg", f"public, max-age={PHOTO_MAX_AGE}")

    routes = [Route("/people/{alias}/photo", person_photo)]
    if config.serve.page:
        routes += [Route("/", index_page(config.serve.language)),
                   Route("/messages/{language}.json", page_messages_file())]
        routes += [Route(path, page_file(page_text(name), media_type))
                   for path, (name, media_type) in PAGE_FILES.items() if path != "/"]
    return routes
