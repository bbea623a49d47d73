"""``lookalike bot``: the Telegram bot (python-telegram-bot) over the recognition pool.

A photo (or an image sent as a file) is answered with the best match of every face, its percent, and the
picture of ``query --out``. Replies go through python-telegram-bot's AIORateLimiter (Telegram allows a bot
about 30 messages a second). The token comes from ``LOOKALIKE_BOT_TOKEN`` and is never logged. The bot polls
Telegram, or with ``webhook_url`` set, registers that webhook (with a fresh secret) and listens on host:port
behind ``serve``'s HTTP guard (connections, header and body times), refusing a post without the secret before
reading its body.
Every photo's answer is recorded by the monitor (``monitor.py``: the answer log, metrics on ``metrics_port``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from telegram import Message, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, CommandHandler, ContextTypes, filters
from telegram.ext import MessageHandler

from ..answers.log import photo_status
from ..io.catalog import display_name
from ..config import Config
from ..errors import LookalikeError
from ..answers.monitor import Monitor
from ..answers.recognizer import Busy, RecognitionFailed, RecognitionTimeout, Recognizer
from ..answers.render import MAX_PANELS
from .serve import Counted, RequestStats, error, http_server, listen, stop_on_terminate

if TYPE_CHECKING:
    from ..answers.query import FaceResult, PhotoResult

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "LOOKALIKE_BOT_TOKEN"
SECRET_HEADER = "x-telegram-bot-api-secret-token"
MAX_UPDATE_BYTES = 1_000_000  # an update Telegram posts to the webhook: a message is a few kB
PHOTOS_PER_CHAT = 2  # photos of one chat in work at once; more are turned away, so that no chat takes every place
UPDATES_PER_PLACE = 4  # updates handled at once, per place of the recognizer: those without a place are told BUSY

HELP = ("Send me a photo of a face, a selfie works best, and I will tell you who of my {people} people you look "
        "like, how much in percent, and show you both side by side.\n\n"
        "One person per photo is clearest; with several faces I answer each, left to right. Photos can be sent as "
        "a photo or as a file (JPEG, PNG, WebP...), up to {megabytes:g} MB.\n\n/help shows this again.")
NO_FACE = ("I could not find a face in this photo. Try one where your face is well lit, looks at the camera and "
           "is not too small.")
BROKEN = "I could not open this file as an image. Please send a photo (JPEG, PNG, WebP...)."
TOO_BIG = "This file is too big for me ({size}); please send a photo under {megabytes:g} MB."
TOO_MANY_PIXELS = "This image has too many pixels for me; please send a smaller photo."
BUSY = "I am answering a lot of photos right now. Please send yours again in a minute."
ONE_AT_A_TIME = "I am still answering your last photos. Please send this one again once they are answered."
TIMEOUT = "This photo took me too long. Please try again, or send a smaller one."
TOO_SLOW = "Your photo did not reach me in time. Please send it again."
FAILED = "Something went wrong with this photo, sorry. Please try another one."
HARD_TO_SEE = ("(Your face was small or unclear in this photo, so I looked twice; a closer, sharper photo gives a "
               "surer answer.)")
NOT_A_PHOTO = "Send me a photo of a face and I will tell you who you look like. /help says more."


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


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


class Refused(Exception):
    """A photo the bot does not recognise: the answer's status (answer_log.STATUSES) and the reply saying why."""

    def __init__(self, status: str, reply: str):
        super().__init__(status)
        self.status = status
        self.reply = reply


class FileTooLarge(Exception):
    pass


async def fetch_capped(client: httpx.AsyncClient, url: str, limit: int) -> bytes:
    """The body of a GET of ``url``, read as it arrives: FileTooLarge past ``limit`` bytes (read no further),
    httpx.HTTPStatusError for an answer other than 2xx (a redirect is not followed)."""
    async with client.stream("GET", url) as response:
        response.raise_for_status()
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise FileTooLarge()
            chunks.append(chunk)
    return b"".join(chunks)


def caption(faces: list[FaceResult]) -> str:
    """The text sent with the picture: the best match of each face, with its percent, and a hint when the
    detection fallback had to find the faces. Names are shortened, so that the caption stays within Telegram's
    limit (MAX_PANELS lines of at most ~70 characters, and the hint)."""
    if len(faces) == 1:
        best = faces[0].matches[0]
        lines = [f"You look like {display_name(best.name)}: {best.similarity:.0%} alike."]
    else:
        lines = [f"I found {len(faces)} faces; left to right they look like:"]
        lines += [f"{number}. {display_name(face.matches[0].name)}: {face.matches[0].similarity:.0%}"
                  for number, face in enumerate(faces[:MAX_PANELS], 1)]
        if len(faces) > MAX_PANELS:
            lines.append(f"(and {len(faces) - MAX_PANELS} more faces)")
    if any(face.detector != "hog" for face in faces):
        lines.append(HARD_TO_SEE)
    return "\n".join(lines)


class LookalikeBot:
    """The bot's handlers, answering photos with a recognizer."""

    def __init__(self, recognizer: Recognizer, config: Config, monitor: Monitor):
        self.recognizer = recognizer
        self.monitor = monitor
        self.limit = config.serve.max_body_bytes
        self.download_seconds = config.serve.body_timeout
        self._http: httpx.AsyncClient | None = None
        self.in_work: Counter[int] = Counter()  # photos in work per chat (all in the bot's event loop)

    @property
    def http(self) -> httpx.AsyncClient:
        """The client that downloads photos from Telegram (made in the bot's event loop, on first use)."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.download_seconds)
        return self._http

    async def close(self, application: Application | None = None) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(HELP.format(people=self.recognizer.gallery["people"],
                                                              megabytes=self.limit / 1_000_000))

    async def on_other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(NOT_A_PHOTO)

    async def on_photo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        started, chat = time.perf_counter(), message.chat_id
        if self.in_work[chat] >= PHOTOS_PER_CHAT:
            await message.reply_text(ONE_AT_A_TIME)
            status, result = "busy", None
        else:
            self.in_work[chat] += 1
            try:
                status, result = await self.answer(message)
            finally:
                self.in_work[chat] -= 1
                if not self.in_work[chat]:
                    del self.in_work[chat]
        self.monitor.answered(status, time.perf_counter() - started, result, client=str(chat))

    async def answer(self, message: Message) -> tuple[str, PhotoResult | None]:
        """Reply to a photo; returns the answer's status (see answer_log.STATUSES) and the worker's result."""
        try:
            with self.recognizer.place() as place:  # taken before the file is downloaded: bounded memory
                data = await self.download(message)
                name = getattr(message.document, "file_name", None) or "photo"
                result, picture = await place.recognize(data, name, picture=True)
        except Refused as refused:
            await message.reply_text(refused.reply)
            return refused.status, None
        except Busy:
            await message.reply_text(BUSY)
            return "busy", None
        except RecognitionTimeout:
            await message.reply_text(TIMEOUT)
            return "timeout", None
        except RecognitionFailed:
            await message.reply_text(FAILED)
            return "failed", None
        if result.reason or not result.faces:
            await message.reply_text(TOO_MANY_PIXELS if result.reason == "too_large" else
                                     BROKEN if result.reason else BUSY if result.fallback_busy else NO_FACE)
        else:
            await message.reply_photo(picture, caption=caption(result.faces), filename="lookalike.png")
        return photo_status(result), result

    def too_big(self, size: str) -> Refused:
        return Refused("too_big", TOO_BIG.format(size=size, megabytes=self.limit / 1_000_000))

    async def download(self, message: Message) -> bytes:
        """The photo's bytes, read from Telegram as they come: at most ``max_body_bytes`` of them (whatever size
        the message declares), within ``body_timeout`` in all; Refused otherwise."""
        attachment = message.photo[-1] if message.photo else message.document  # photo sizes: largest last
        if attachment.file_size and attachment.file_size > self.limit:
            raise self.too_big(megabytes(attachment.file_size))
        try:
            async with asyncio.timeout(self.download_seconds):
                return await fetch_capped(self.http, (await attachment.get_file()).file_path, self.limit)
        except FileTooLarge:
            raise self.too_big(f"over {megabytes(self.limit)}") from None
        except TimeoutError:
            raise Refused("too_slow", TOO_SLOW) from None
        except BadRequest as exc:
            if "too big" in str(exc).lower():  # Telegram hands bots files of at most 20 MB
                raise self.too_big("over 20 MB") from None
            log.info("cannot download a photo: %s", exc)
            raise Refused("not_fetched", FAILED) from None
        except (httpx.HTTPError, TelegramError) as exc:
            log.info("cannot download a photo: %s", exc)
            raise Refused("not_fetched", FAILED) from None

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
    new = filters.UpdateType.MESSAGE  # an edited message (a photo's caption changed) is not answered again
    application.add_handler(MessageHandler(new & (filters.PHOTO | filters.Document.ALL), bot.on_photo))
    application.add_handler(MessageHandler(new, bot.on_other))
    application.add_error_handler(bot.on_error)
    return application


def webhook_app(application: Application, secret: str, path: str, body_seconds: float) -> Starlette:
    """The webhook's one route, POST ``path``: an update with the secret header is put on the application's
    queue (200); no secret 403, its body unread; a body over MAX_UPDATE_BYTES 413, not JSON of an update 400, not
    complete within ``body_seconds`` 408."""
    async def receive_update(request: Request) -> Response:
        if not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(), secret.encode()):
            return error(403, "not this webhook's secret")
        body = b""
        try:
            async with asyncio.timeout(body_seconds):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > MAX_UPDATE_BYTES:
                        return error(413, f"an update is at most {MAX_UPDATE_BYTES} bytes")
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
    """Answer Prometheus (GET /metrics) on host:``metrics_port`` behind serve's HTTP guard, from a thread with an
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
    recognizer = Recognizer(data_dir, config)
    recognizer.start()
    recognizer.watch(config.serve.reload_seconds)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, recognizer.check_now)
    monitor, stop_metrics = None, None
    try:
        monitor = Monitor(config, "bot", recognizer)
        url, host, port = config.bot.webhook_url, config.serve.host, config.serve.port
        if config.bot.metrics_port:
            stop_metrics = serve_metrics(monitor, config)
        application = build_application(token, recognizer, config, monitor)
        if url:
            on_ready(f"listening on {host}:{port} for the webhook {url}")
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, stop_on_terminate)  # uvicorn re-raises it after its graceful shutdown
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(serve_webhook(application, config, url))
        else:
            on_ready("polling Telegram")
            application.run_polling(allowed_updates=["message"])
    finally:
        if stop_metrics is not None:
            stop_metrics()
        if monitor is not None:
            monitor.close()
        recognizer.close()
