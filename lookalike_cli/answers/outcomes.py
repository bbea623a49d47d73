"""Every way an answer can end, in one table: the status the answer log and the metrics record, what it means, the
HTTP code ``serve`` answers, the Telegram bot's reply and the key of the web page's message.

``serve``, the bot, the monitor, the answer log and the docs read it; the page gets ``page_messages()`` with its
own texts. The texts are English, the ids of their translations (``language.py``, ``make messages``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..language import N_, translate

if TYPE_CHECKING:
    from .results import PhotoResult


@dataclass(frozen=True)
class Outcome:
    status: str  # the answer log's and the metrics' status
    meaning: str
    http: int  # the code ``serve`` answers with (0: the bot's alone)
    reply: str  # the bot's reply ("": the answer picture itself, or nobody to reply to)
    page: str  # the key of the page's message in PAGE_MESSAGES ("": the answer itself, or nobody to show it to)
    from_worker: bool = False  # a recognition worker gave a result for the photo


# The bot's replies (a photo refused or not answered), in English: the ids of their translations (language.py).
NO_FACE = N_("I could not find a face in this photo. Try one where your face is well lit, looks at the camera and "
             "is not too small.")
BROKEN = N_("I could not open this file as an image. Please send a photo (JPEG, PNG, WebP...).")
TOO_BIG = N_("This file is too big for me ({size}); please send a photo under {megabytes} MB.")
TOO_MANY_PIXELS = N_("This image has too many pixels for me; please send a smaller photo.")
BUSY = N_("I am answering a lot of photos right now. Please send yours again in a minute.")
ONE_AT_A_TIME = N_("I am still answering your last photos. Please send this one again once they are answered.")
TIMEOUT = N_("This photo took me too long. Please try again, or send a smaller one.")
TOO_SLOW = N_("Your photo did not reach me in time. Please send it again.")
FAILED = N_("Something went wrong with this photo, sorry. Please try another one.")
# A face's answer, in the bot's caption and on the page.
LOOKS_LIKE = N_("You look like {name}: {percent} alike.")

# The page's messages, by key.
PAGE_MESSAGES = {
    "hardToSee": N_("Your face was small or unclear in this photo, so it was looked for twice; a closer, sharper "
                    "photo gives a surer answer."),
    "noFace": N_("No face was found in this photo. Try one where your face is well lit, looks at the camera and "
                 "is not too small."),
    "notImage": N_("This file is not a photo that can be opened. Please choose a JPEG, PNG or WebP image."),
    "tooLarge": N_("This photo is too large for the server. Please choose a smaller one."),
    "busy": N_("The server is busy with other photos right now. Please try again in {seconds} seconds."),
    "busyOneSecond": N_("The server is busy with other photos right now. Please try again in 1 second."),
    "oneAtATime": N_("Your last photos are still being answered. Please wait for them, then try this one again."),
    "timeout": N_("Your photo took too long to answer. Please try again, or choose a smaller photo."),
    "failed": N_("Something went wrong with this photo on the server. Please try another one."),
    "offline": N_("The server could not be reached. Check your connection and try again."),
    "looksLike": LOOKS_LIKE,
}

OUTCOMES = {outcome.status: outcome for outcome in (
    Outcome("ok", "faces found and answered", 200, "", "", from_worker=True),
    Outcome("no_face", "read, but no face found", 200, NO_FACE, "noFace", from_worker=True),
    Outcome("fallback_busy", "HOG found no face and the detection fallback was busy in the other workers: "
            "answered as no face, with `\"fallback_busy\": true` (try again)", 200, BUSY, "busy", from_worker=True),
    Outcome("rejected", "not usable as an image (`reason`: `undecodable`, `unsupported_format`, "
            "`too_large`...)", 400, BROKEN,
            "notImage", from_worker=True),
    Outcome("too_big", "over `--max-body-bytes`, not read", 413, TOO_BIG, "tooLarge"),
    Outcome("bad_request", "no photo in the request, a broken request, or a request for something else "
            "(`?format=gif`)", 400, "", "notImage"),
    Outcome("busy", "every worker busy and the queue full, or `--max-connections` open", 503, BUSY,
            "busy"),
    Outcome("too_many", "the client already had `--max-client-photos` photos in work", 429, ONE_AT_A_TIME,
            "oneAtATime"),
    Outcome("too_slow", "the photo did not arrive within `--body-timeout`, or the headers within "
            "`--header-timeout`", 408, TOO_SLOW, "timeout"),
    Outcome("gone", "the client went away before its photo was read (counted, never sent)", 499, "", ""),
    Outcome("not_fetched", "the bot could not fetch the photo from Telegram (an error answer, or a failed "
            "connection)", 0, FAILED, ""),
    Outcome("timeout", "not answered within `--request-timeout`", 504, TIMEOUT, "timeout"),
    Outcome("failed", "a recognition worker failed on it", 500, FAILED, "failed"),
)}
ANSWERED = ("ok", "no_face")  # the statuses that are not errors

# A rejected photo, by the reason its image was refused, where that differs from "rejected": (HTTP code, the bot's
# reply, the page's message key).
REJECTIONS = {"too_large": (413, TOO_MANY_PIXELS, "tooLarge"), "unsupported_format": (415, BROKEN, "notImage"),
              "timeout": (400, BROKEN, "timeout")}

# The status of an HTTP answer that no worker gave a result for, by its code (any other code: bad_request).
STATUS_OF_HTTP = {outcome.http: outcome.status for outcome in OUTCOMES.values()
                  if not outcome.from_worker and outcome.http}


def photo_status(result: PhotoResult) -> str:
    """The status of a photo that reached a recognition worker."""
    if result.reason:
        return "rejected"
    return "ok" if result.faces else "fallback_busy" if result.fallback_busy else "no_face"


def http_status(code: int, result: PhotoResult | None) -> str:
    """The status of an HTTP answer: the photo's when a worker answered it, else its code's."""
    return photo_status(result) if result is not None else STATUS_OF_HTTP.get(code, "bad_request")


def rejection(reason: str) -> tuple[int, str, str]:
    """The HTTP code, the bot's reply and the page's message key for a photo refused for ``reason``."""
    rejected = OUTCOMES["rejected"]
    return REJECTIONS.get(reason, (rejected.http, rejected.reply, rejected.page))


def outcomes_table() -> str:
    """The table of outcomes in Markdown, for docs/operations.md."""
    def reply(outcome: Outcome) -> str:
        return outcome.reply.replace("{size}", "SIZE").replace("{megabytes}", "N") or "(none)"

    lines = ["| status | the photo | HTTP | the bot replies | the page says |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{o.status}` | {o.meaning} | {o.http or '-'} | {reply(o)} | {PAGE_MESSAGES.get(o.page, '(none)')} |"
              .replace("{seconds}", "N") for o in OUTCOMES.values()]
    return "\n".join(lines) + "\n"


def page_messages(language: str) -> dict:
    """What the web page needs to tell people how an answer ended: its messages in ``language``, the message of
    each status and of each rejection reason, and the status of each HTTP code of an answer whose body says
    none."""
    return {"messages": {key: translate(language, text) for key, text in PAGE_MESSAGES.items()},
            "statuses": {outcome.status: outcome.page for outcome in OUTCOMES.values() if outcome.page},
            "rejections": {reason: page for reason, (_, _, page) in REJECTIONS.items()},
            "http": {str(code): status for code, status in STATUS_OF_HTTP.items()}}
