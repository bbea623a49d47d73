"""``lookalike bot``: the Telegram bot (python-telegram-bot) over the recognition pool.

A photo (or an image sent as a file) is answered with the best match of every face, its percent, and the
picture of ``query --out``. Replies go through python-telegram-bot's AIORateLimiter (Telegram allows a bot
about 30 messages a second). The token comes from ``LOOKALIKE_BOT_TOKEN`` and is never logged. The bot polls
Telegram, or with ``webhook_url`` set, registers that webhook (with a fresh secret) and listens on host:port
behind the HTTP guard (``http.py``) (connections, header and body times), refusing a post without the secret before
reading its body.
Every photo's answer is recorded by the monitor (``answers/monitor.py``: the answer log, metrics on
``metrics_port``); replies come from the outcomes' table (``answers/outcomes.py``), in the chat's language: the one
chosen with ``/language``, else the Telegram user's ``language_code``, else ``serve.language``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from telegram import Message, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from ..answers.monitor import Monitor
from ..answers.outcomes import LOOKS_LIKE, OUTCOMES, photo_status, rejection
from ..answers.recognizer import Busy, RecognitionFailed, RecognitionTimeout, Recognizer
from ..answers.render import FACES_NOT_SHOWN, MAX_PANELS
from ..config import Config
from ..errors import LookalikeError
from ..face.models import FALLBACK_LOOKS
from ..files import OverLimit
from ..io.catalog import SHOWN_NAME_CHARS, display_name
from ..language import LANGUAGES, N_, SOURCE_LANGUAGE, decimal, known_language, language_name, percent, translate
from .http import CLIENT_GONE, Counted, RequestStats, error, http_server, listen
from .fairness import PhotosPerClient, TooMany
from .languages import local_names
from .lifecycle import interrupt_on_terminate, serving_recognizer
from .streams import read_capped_async

if TYPE_CHECKING:
    from ..answers.results import FaceResult, PhotoResult

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "LOOKALIKE_BOT_TOKEN"
SECRET_HEADER = "x-telegram-bot-api-secret-token"
MAX_UPDATE_BYTES = 1_000_000  # an update Telegram posts to the webhook: a message is a few kB
CAPTION_UNITS = 1024  # Telegram's bound on a photo's caption, in UTF-16 code units
UPDATES_PER_PLACE = 4  # updates handled at once, per place of the recognizer: those without a place are told BUSY
CHOSEN_LANGUAGES = 100_000  # chats whose /language choice is kept (in memory), the least recent forgotten

HELP = N_("Send me a photo of a face, a selfie works best, and I will tell you who in my gallery you look like, "
          "how much in percent, and show you both side by side. People in my gallery: {people}.\n\n"
          "One person per photo is clearest; with several faces I answer each, left to right. Photos can be sent "
          "as a photo or as a file (JPEG, PNG, WebP...), up to {megabytes} MB.\n\n"
          "/help shows this again; /language changes my language.")
HARD_TO_SEE = N_("(Your face was small or unclear in this photo, so I looked twice; a closer, sharper photo gives "
                 "a surer answer.)")
NOT_A_PHOTO = N_("Send me a photo of a face and I will tell you who you look like. /help says more.")
FACES_FOUND = N_("Faces found: {count}. Left to right, they look like:")
OVER = N_("over {size}")
MY_LANGUAGE = N_("My language: {language}. To change it, send /language and one of: {languages}.")
LANGUAGE_CHANGED = N_("Language changed: {language}.")
UNKNOWN_LANGUAGE = N_("I do not speak that language. Send /language and one of: {languages}.")


def bot_token() -> str:
    """The bot's token from the environment."""
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise LookalikeError(f"set {TOKEN_VARIABLE} to the bot token that @BotFather gave you")
    return token


class RedactingFormatter(logging.Formatter):
    """Formats log records with the bot token hidden: the Bot API's URLs hold it, sometimes URL-encoded
    (``123:abc`` as ``123%3Aabc``), so its secret part after the colon is hidden wherever it appears."""

    def __init__(self, token: str, fmt: str | None = None):
        super().__init__(fmt)
        self.secrets = [token, token.rpartition(":")[2]]

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "<token>")
        return text


def hide_token_in_logs(token: str) -> None:
    """Redact the token in everything the root logger's handlers print."""
    root = logging.getLogger()
    for handler in root.handlers:
        fmt = handler.formatter._fmt if handler.formatter else None
        handler.setFormatter(RedactingFormatter(token, fmt))


def megabytes(size: int, language: str) -> str:
    return f"{decimal(size / 1_000_000, language, 1)} MB"


class Refused(Exception):
    """A photo the bot does not recognise: the answer's status (outcomes.OUTCOMES) and its reply (the status's),
    said in a language with ``values`` in its fields."""

    def __init__(self, status: str, **values: str):
        super().__init__(status)
        self.status = status
        self.values = values

    def reply(self, language: str) -> str:
        return translate(language, OUTCOMES[self.status].reply, **self.values)


async def fetch_capped(client: httpx.AsyncClient, url: str, limit: int) -> bytes:
    """The body of a GET of ``url``, read as it arrives: OverLimit past ``limit`` bytes (read no further),
    httpx.HTTPStatusError for an answer other than 2xx (a redirect is not followed)."""
    async with client.stream("GET", url) as response:
        response.raise_for_status()
        return await read_capped_async(response.aiter_bytes(), limit)


def utf16_units(text: str) -> int:
    """The length of ``text`` as Telegram counts it: in UTF-16 code units (a character beyond the BMP, an emoji,
    counts twice)."""
    return len(text.encode("utf-16-le")) // 2


def caption(faces: list[FaceResult], language: str = SOURCE_LANGUAGE) -> str:
    """The text sent with the picture, in ``language``: the best match of each face, with its percent, and a hint
    when the detection fallback had to find the faces. Names are shortened, as much as it takes for the caption to
    stay within Telegram's CAPTION_UNITS (MAX_PANELS lines of names, and the hint)."""
    for limit in range(SHOWN_NAME_CHARS, 0, -1):
        text = caption_with_names_of(faces, limit, language)
        if utf16_units(text) <= CAPTION_UNITS:
            break
    return text


def caption_with_names_of(faces: list[FaceResult], limit: int, language: str = SOURCE_LANGUAGE) -> str:
    """The caption, with names of at most ``limit`` characters."""
    if len(faces) == 1:
        best = faces[0].matches[0]
        lines = [translate(language, LOOKS_LIKE, name=display_name(best.name, limit),
                           percent=percent(best.similarity, language))]
    else:
        lines = [translate(language, FACES_FOUND, count=len(faces))]
        lines += [f"{number}. {display_name(face.matches[0].name, limit)}: "
                  f"{percent(face.matches[0].similarity, language)}"
                  for number, face in enumerate(faces[:MAX_PANELS], 1)]
        if len(faces) > MAX_PANELS:
            lines.append(f"({translate(language, FACES_NOT_SHOWN, count=len(faces) - MAX_PANELS)})")
    if any(face.detector in FALLBACK_LOOKS for face in faces):
        lines.append(translate(language, HARD_TO_SEE))
    return "\n".join(lines)


def languages_list() -> str:
    """The languages the bot speaks, for /language: ``en (English), ru (Русский)...``."""
    return ", ".join(f"{code} ({language_name(code)})" for code in LANGUAGES)


class LookalikeBot:
    """The bot's handlers, answering photos with a recognizer."""

    def __init__(self, recognizer: Recognizer, config: Config, monitor: Monitor):
        self.recognizer = recognizer
        self.monitor = monitor
        self.limit = config.serve.max_body_bytes
        self.download_seconds = config.serve.body_timeout
        self._http: httpx.AsyncClient | None = None
        self.photos = PhotosPerClient(config.serve.max_client_photos)  # per chat
        self.default_language = config.serve.language
        self.chosen_languages: OrderedDict[int, str] = OrderedDict()  # chat -> its /language, the last CHOSEN_LANGUAGES

    @property
    def http(self) -> httpx.AsyncClient:
        """The client that downloads photos from Telegram (made in the bot's event loop, on first use)."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.download_seconds)
        return self._http

    async def close(self, application: Application | None = None) -> None:
        if self._http is not None:
            await self._http.aclose()

    def language(self, update: Update) -> str:
        """The language to answer ``update`` in: its chat's /language, else its user's, else the default."""
        chosen = self.chosen_languages.get(update.effective_message.chat_id)
        user = update.effective_user
        return chosen or known_language(user and user.language_code) or self.default_language

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        language = self.language(update)
        await update.effective_message.reply_text(translate(
            language, HELP, people=decimal(self.recognizer.gallery["people"], language),
            megabytes=decimal(self.limit / 1_000_000, language)))

    async def on_language(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/language``: says the chat's language; ``/language CODE`` changes it."""
        message, chat = update.effective_message, update.effective_message.chat_id
        if not context.args:
            language = self.language(update)
            await message.reply_text(translate(language, MY_LANGUAGE, language=language_name(language),
                                               languages=languages_list()))
            return
        chosen = known_language(context.args[0])
        if chosen is None:
            await message.reply_text(translate(self.language(update), UNKNOWN_LANGUAGE, languages=languages_list()))
            return
        self.chosen_languages[chat] = chosen
        self.chosen_languages.move_to_end(chat)
        if len(self.chosen_languages) > CHOSEN_LANGUAGES:
            self.chosen_languages.popitem(last=False)
        await message.reply_text(translate(chosen, LANGUAGE_CHANGED, language=language_name(chosen)))

    async def on_other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(translate(self.language(update), NOT_A_PHOTO))

    async def on_photo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, language = update.effective_message, self.language(update)
        started, chat = time.perf_counter(), message.chat_id
        try:
            with self.photos.holding(chat):
                status, result = await self.answer(message, language)
        except TooMany:
            await message.reply_text(Refused("too_many").reply(language))
            status, result = "too_many", None
        self.monitor.answered(status, time.perf_counter() - started, result, client=str(chat))

    async def answer(self, message: Message, language: str) -> tuple[str, PhotoResult | None]:
        """Reply to a photo in ``language``; returns the answer's status (see outcomes.OUTCOMES) and the worker's
        result."""
        try:
            with self.recognizer.place() as place:  # taken before the file is downloaded: bounded memory
                data = await self.download(message, language)
                name = getattr(message.document, "file_name", None) or "photo"
                result, picture = await place.recognize(data, name, picture=True, client=message.chat_id,
                                                        language=language)
        except Busy:
            refused = Refused("busy")
        except RecognitionTimeout:
            refused = Refused("timeout")
        except RecognitionFailed:
            refused = Refused("failed")
        except Refused as exc:
            refused = exc
        else:
            status = photo_status(result)
            if result.faces:
                named = result.named(local_names(self.recognizer, language))
                await message.reply_photo(picture, caption=caption(named.faces, language), filename="lookalike.png")
            else:
                reply = rejection(result.reason)[1] if result.reason else OUTCOMES[status].reply
                await message.reply_text(translate(language, reply))
            return status, result
        await message.reply_text(refused.reply(language))
        return refused.status, None

    def too_big(self, size: str, language: str) -> Refused:
        return Refused("too_big", size=size, megabytes=decimal(self.limit / 1_000_000, language))

    async def download(self, message: Message, language: str) -> bytes:
        """The photo's bytes, read from Telegram as they come: at most ``max_body_bytes`` of them (whatever size
        the message declares), within ``body_timeout`` in all; Refused otherwise."""
        attachment = message.photo[-1] if message.photo else message.document  # photo sizes: largest last
        if attachment.file_size and attachment.file_size > self.limit:
            raise self.too_big(megabytes(attachment.file_size, language), language)
        try:
            async with asyncio.timeout(self.download_seconds):
                return await fetch_capped(self.http, (await attachment.get_file()).file_path, self.limit)
        except OverLimit:
            raise self.too_big(translate(language, OVER, size=megabytes(self.limit, language)), language) from None
        except TimeoutError:
            raise Refused("too_slow") from None
        except BadRequest as exc:
            if "too big" in str(exc).lower():  # Telegram hands bots files of at most 20 MB
                raise self.too_big(translate(language, OVER, size=megabytes(20_000_000, language)), language) from None
            log.info("cannot download a photo: %s", exc)
            raise Refused("not_fetched") from None
        except (httpx.HTTPError, TelegramError) as exc:
            log.info("cannot download a photo: %s", exc)
            raise Refused("not_fetched") from None

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("while answering an update: %s", context.error, exc_info=context.error)


def smooth_rate_limiter(per_second: float) -> AIORateLimiter:
    """python-telegram-bot's limiter as a bucket of one message that drains ``per_second``: never more than
    ``per_second`` (+1) messages in any second. (Its default bucket holds a whole second's worth, so a burst
    could send twice the rate in its first second.) Telegram's "retry after" answers are waited out, 3 times."""
    return AIORateLimiter(overall_max_rate=1, overall_time_period=1 / per_second, max_retries=3)


def build_application(token: str, recognizer: Recognizer, config: Config, monitor: Monitor) -> Application:
    """The python-telegram-bot application with the handlers, the rate limiter and the configured Bot API."""
    settings = config.bot
    bot = LookalikeBot(recognizer, config, monitor)
    application = (ApplicationBuilder().token(token).base_url(settings.bot_api_url)
                   .base_file_url(settings.bot_file_url)
                   .rate_limiter(smooth_rate_limiter(settings.bot_max_rate))
                   .concurrent_updates(UPDATES_PER_PLACE * recognizer.capacity).post_shutdown(bot.close).build())
    application.add_handler(CommandHandler(["start", "help"], bot.on_help))
    application.add_handler(CommandHandler("language", bot.on_language))
    new = filters.UpdateType.MESSAGE  # an edited message (a photo's caption changed) is not answered again
    application.add_handler(MessageHandler(new & (filters.PHOTO | filters.Document.ALL), bot.on_photo))
    application.add_handler(MessageHandler(new, bot.on_other))
    application.add_error_handler(bot.on_error)
    return application


def webhook_app(application: Application, secret: str, path: str, body_seconds: float) -> Starlette:
    """The webhook's one route, POST ``path``: an update with the secret header is put on the application's
    queue (200); no secret 403, its body unread; a body over MAX_UPDATE_BYTES 413 (from its Content-Length, when
    it says), not JSON of an update 400, not complete within ``body_seconds`` 408; a client gone before its body is
    a debug line."""
    async def receive_update(request: Request) -> Response:
        if not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(), secret.encode()):
            return error(403, "not this webhook's secret")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_UPDATE_BYTES:  # refused from the header, no byte read
            return error(413, f"an update is at most {MAX_UPDATE_BYTES} bytes")
        try:
            async with asyncio.timeout(body_seconds):
                body = await read_capped_async(request.stream(), MAX_UPDATE_BYTES)
        except OverLimit:
            return error(413, f"an update is at most {MAX_UPDATE_BYTES} bytes")
        except ClientDisconnect:
            log.debug("the webhook's client went away before its update was read")
            return Response(status_code=CLIENT_GONE)  # not sent: there is no one to send it to
        except TimeoutError:
            return error(408, f"the update did not arrive within {body_seconds:g} s")
        try:
            update = Update.de_json(json.loads(body), application.bot)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return error(400, "not a Telegram update")
        await application.update_queue.put(update)
        return Response()

    return Starlette(routes=[Route(path, receive_update, methods=["POST"])])


def serve_metrics(monitor: Monitor, config: Config) -> Callable[[], None]:
    """Answer Prometheus (GET /metrics) on host:``metrics_port`` behind the HTTP guard, from a thread with an
    event loop of its own; returns what stops it."""
    if monitor.registry is None:
        raise LookalikeError("a metrics port is given, but metrics are off (--no-metrics)")

    async def metrics(request: Request) -> Response:
        text, content_type = monitor.exposition()
        return Response(text, media_type=content_type)

    server = http_server(Counted(Starlette(routes=[Route("/metrics", metrics)]), RequestStats()), config)
    sock = listen(config.serve.host, config.bot.metrics_port)
    thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[sock]),), name="metrics", daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    return stop


async def serve_webhook(application: Application, config: Config, url: str) -> None:
    """Answer the updates Telegram posts to ``url`` (forwarded to host:port), until interrupted."""
    secret = secrets.token_urlsafe(32)
    app = webhook_app(application, secret, "/" + urlsplit(url).path.lstrip("/"), config.serve.body_timeout)
    server = http_server(Counted(app, RequestStats()), config)
    sock = listen(config.serve.host, config.serve.port)
    try:
        async with application:
            await application.start()
            await application.bot.set_webhook(url, secret_token=secret, allowed_updates=["message"])
            try:
                await server.serve(sockets=[sock])
            finally:
                await application.stop()
    finally:
        sock.close()


def run_bot(data_dir: str | Path, config: Config, token: str, on_ready: Callable[[str], None] = print) -> None:
    """Answer Telegram until interrupted: polling, or a webhook on ``host:port`` when ``webhook_url`` is set."""
    hide_token_in_logs(token)
    with serving_recognizer(data_dir, config) as recognizer, contextlib.ExitStack() as stack:
        monitor = Monitor(config, "bot", recognizer)
        stack.callback(monitor.close)
        if config.bot.metrics_port:
            stack.callback(serve_metrics(monitor, config))
        application = build_application(token, recognizer, config, monitor)
        url, host, port = config.bot.webhook_url, config.serve.host, config.serve.port
        if url:
            on_ready(f"listening on {host}:{port} for the webhook {url}")
            with interrupt_on_terminate():
                asyncio.run(serve_webhook(application, config, url))
        else:
            on_ready("polling Telegram")
            application.run_polling(allowed_updates=["message"])
