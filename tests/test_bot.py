"""The Telegram bot, run as `lookalike bot`, against a fake Bot API server on 127.0.0.1 (real HTTP, real models)."""

import contextlib
import dataclasses
import io
import json
import re
import socket
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from PIL import Image

from lookalike_cli.answers import outcomes
from lookalike_cli.serving import bot
from lookalike_cli.cli import cli
from lookalike_cli.answers.results import FaceResult, Match
from lookalike_cli.language import translate

import hostile
from conftest import DEMO, FIXTURES, hard_selfie
from fake_telegram import FakeTelegram
from helpers import TOKEN, photo, raw_answer, reply, start_bot, stop_bot, two_people
from servers import free_port, running, wait_until

RATE = 30  # messages per second: the bot's default bot_max_rate, Telegram's limit


@pytest.fixture(scope="module")
def telegram(built, tmp_path_factory):
    """The fake Bot API with `lookalike bot` polling it."""
    fake = FakeTelegram(TOKEN)
    with running(fake.app()) as url, open(tmp_path_factory.mktemp("bot") / "bot.log", "w+") as log:
        process = start_bot(built, url, log, "--body-timeout", "3")  # a download's deadline; loopback takes ms
        try:
            wait_until(lambda: fake.called("getUpdates") or process.poll() is not None, what="the bot to poll")
            assert process.poll() is None, "the bot stopped"
            yield fake
        finally:
            output = stop_bot(process, log)
    assert "bot<token>/sendPhoto" in output  # the Bot API's URLs were logged, with the token hidden


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def test_start_and_help_explain_what_to_send(telegram):
    telegram.command(1, "/start")
    telegram.command(2, "/help")
    for chat in (1, 2):
        answer = reply(telegram, chat)
        assert answer.method == "sendMessage" and "Send me a photo of a face" in answer.text
        assert "People in my gallery: 48." in answer.text and "up to 10 MB" in answer.text


def test_a_photo_gets_its_lookalike_with_percent_and_picture(telegram):
    telegram.photo(3, photo("ami-bera"))
    answer = reply(telegram, 3)
    assert answer.method == "sendPhoto"
    assert re.fullmatch(r"You look like Ami Bera: \d{1,3}% alike\.", answer.text), answer.text
    picture = Image.open(io.BytesIO(answer.photo))
    assert picture.format == "PNG" and picture.width > picture.height > 300


def test_a_degraded_selfie_gets_a_lookalike_and_a_hint(telegram):
    telegram.photo(8, hard_selfie(), 131, 160)
    answer = reply(telegram, 8)
    assert answer.method == "sendPhoto"
    first, hint = answer.text.splitlines()
    assert re.fullmatch(r"You look like [\w .'-]+: \d{1,3}% alike\.", first), answer.text
    assert hint == bot.HARD_TO_SEE


def test_an_image_sent_as_a_file_is_answered_like_a_photo(telegram):
    telegram.document(4, photo("bob-corker"), "bob.jpg", "image/jpeg")
    answer = reply(telegram, 4)
    assert answer.method == "sendPhoto" and answer.text.startswith("You look like Bob Corker: ")


def test_several_faces_are_answered_left_to_right(telegram, demo_gallery):
    buffer = io.BytesIO()
    Image.fromarray(two_people(demo_gallery)).save(buffer, "JPEG")
    telegram.photo(5, buffer.getvalue(), 450, 275)
    answer = reply(telegram, 5)
    assert answer.method == "sendPhoto"
    lines = answer.text.splitlines()
    assert lines[0] == "Faces found: 2. Left to right, they look like:"
    assert re.fullmatch(r"1\. Ami Bera: \d+%", lines[1]) and re.fullmatch(r"2\. Bob Corker: \d+%", lines[2])


@pytest.mark.parametrize("send, expected", [
    (lambda fake, chat: fake.photo(chat, (FIXTURES / "no_face_coffee_cc0.png").read_bytes()), outcomes.NO_FACE),
    (lambda fake, chat: fake.document(chat, b"<html>not a photo</html>", "photo.jpg", "image/jpeg"), outcomes.BROKEN),
    (lambda fake, chat: fake.message(chat, text="hello"), bot.NOT_A_PHOTO),
], ids=["no face", "broken file", "text"])
def test_friendly_answers(telegram, send, expected):
    chat = 100 + len(telegram.updates)
    send(telegram, chat)
    answer = reply(telegram, chat)
    assert answer.method == "sendMessage" and answer.text == expected


def test_a_russian_user_is_answered_in_russian_and_language_switches_it(telegram):
    """Telegram's language_code of the user chooses the language (the picture's caption, the person's name as the
    catalog writes it in Russian, the replies); /language de switches the chat to German, /language says it."""
    telegram.language_codes.update({60: "ru", 61: "ru-RU", 62: "xx-" + "y" * 100})
    telegram.photo(60, photo("ami-bera"))
    answer = reply(telegram, 60)
    assert answer.method == "sendPhoto"
    assert re.fullmatch(r"Твой двойник — Ами Бера: сходство \d{1,3}\xa0%\.", answer.text), answer.text
    telegram.message(61, text="привет")
    assert reply(telegram, 61).text == translate("ru", bot.NOT_A_PHOTO) != bot.NOT_A_PHOTO
    telegram.message(62, text="hello")  # a language the bot does not speak (and an overlong code): the default
    assert reply(telegram, 62).text == bot.NOT_A_PHOTO

    telegram.command(60, "/language de")
    wait_until(lambda: len(telegram.replies(60)) == 2, what="the language's reply")
    assert telegram.replies(60)[1].text == "Sprache geändert: Deutsch."
    telegram.photo(60, photo("bob-corker"))
    wait_until(lambda: len(telegram.replies(60)) == 3, what="the German answer")
    assert re.fullmatch(r"Du ähnelst Bob Corker: \d{1,3}\xa0% Ähnlichkeit\.", telegram.replies(60)[2].text)
    for command, expected in [("/language", "Meine Sprache: Deutsch."), ("/language klingon" + "n" * 5000,
                                                                          "Diese Sprache spreche ich nicht."),
                              ("/language ../../etc", "Diese Sprache spreche ich nicht.")]:
        count = len(telegram.replies(60))
        telegram.command(60, command)
        wait_until(lambda: len(telegram.replies(60)) == count + 1, what=f"the reply to {command[:20]}")
        assert telegram.replies(60)[-1].text.startswith(expected), telegram.replies(60)[-1].text
    assert "ru (Русский)" in telegram.replies(60)[-1].text


def test_a_file_larger_than_it_says_is_refused_once_it_passes_the_limit(telegram):
    telegram.document(7, b"\xff" * 12_000_000, "small.jpg", "image/jpeg", size=1000)  # 12 MB said to be 1 kB
    assert reply(telegram, 7).text == "This file is too big for me (over 10.0 MB); please send a photo under 10 MB."


@pytest.mark.parametrize("chat, download, expected", [(30, "error", outcomes.FAILED), (31, "unknown", outcomes.FAILED),
                                                     (32, "drip", outcomes.TOO_SLOW)])
def test_a_download_that_fails_or_drips_gets_a_reply(telegram, chat, download, expected):
    telegram.document(chat, photo("ami-bera"), "photo.jpg", "image/jpeg", download=download)
    assert reply(telegram, chat).text == expected  # a drip within the bot's --body-timeout of 3 s


def test_one_chat_has_at_most_two_photos_in_work_and_others_are_answered_meanwhile(telegram):
    collage = hostile.collage(10)  # 10 faces: tenths of a second of work, while the 6 updates arrive within ms
    for _ in range(6):
        telegram.photo(40, collage)
    telegram.photo(41, photo("ami-bera"))
    wait_until(lambda: len(telegram.replies(40)) == 6 and telegram.replies(41), what="7 replies")
    answers = telegram.replies(40)
    assert sorted(sent.method for sent in answers) == ["sendMessage"] * 4 + ["sendPhoto"] * 2
    assert {sent.text for sent in answers if sent.method == "sendMessage"} == {outcomes.ONE_AT_A_TIME}
    assert telegram.replies(41)[0].method == "sendPhoto"


def test_a_photo_whose_message_is_edited_is_not_answered_again(telegram):
    sizes = telegram.photo(42, photo("ami-bera"))["message"]["photo"]
    telegram.message(42, kind="edited_message", photo=sizes, caption="me", edit_date=int(time.time()))
    telegram.command(42, "/help")  # answered after the edit's update was handled
    wait_until(lambda: len(telegram.replies(42)) >= 2, what="2 replies")
    assert sorted((sent.method, sent.text.startswith("Send me a photo of a face, a selfie"))
                  for sent in telegram.replies(42)) == [("sendMessage", True), ("sendPhoto", False)]


def test_a_huge_file_is_refused_without_downloading_it(telegram):
    update = telegram.document(6, photo("ami-bera"), "huge.jpg", "image/jpeg", size=50_000_000)
    answer = reply(telegram, 6)
    assert answer.text == "This file is too big for me (50.0 MB); please send a photo under 10 MB."
    file_id = update["message"]["document"]["file_id"]
    assert not [params for params in telegram.called("getFile") if params["file_id"] == file_id]


@pytest.mark.slow
def test_a_burst_of_200_updates_is_answered_within_the_rate_limit(telegram):
    people = ["aaron-schock", "ami-bera", "barack-obama", "bob-corker", "beto-orourke"]
    photos = {20_000 + i: people[i % len(people)] for i in range(10)}
    texts = [10_000 + i for i in range(190)]
    started = time.monotonic()
    for i, chat in enumerate(texts):
        if i % 19 == 0:
            alias = photos[20_000 + i // 19]
            telegram.photo(20_000 + i // 19, photo(alias))
        telegram.command(chat, "/help") if i % 2 else telegram.message(chat, text=f"hello {i}")
    chats = set(texts) | set(photos)
    wait_until(lambda: chats <= {sent.chat_id for sent in telegram.sent}, timeout=120, what="200 replies")
    burst = [sent for sent in telegram.sent if sent.chat_id in chats]
    assert sorted(sent.chat_id for sent in burst) == sorted(chats)  # each answered once, none dropped
    names = {person["alias"]: person["name"] for person in json.loads((DEMO / "catalog.json").read_text())}
    for chat, alias in photos.items():
        assert telegram.replies(chat)[0].text.startswith(f"You look like {names[alias]}: ")
    # The limiter (a bucket of 1 message draining RATE a second) holds the k-th reply of the burst until k / RATE s
    # after the first, which cannot leave before the burst began: a slower machine only delays replies, so none
    # may reach the fake server sooner.
    early = [(k, at - started) for k, at in enumerate(sorted(sent.at for sent in burst)) if at - started < k / RATE]
    assert early == [], early


@dataclasses.dataclass
class Webhook:
    fake: FakeTelegram
    url: str
    port: int
    secret: str
    log: Path  # the bot's output so far

    def logged(self) -> str:
        return self.log.read_text()


@contextlib.contextmanager
def webhook_bot(data_dir, tmp_path, *options: str):
    """`lookalike bot` taking updates on a webhook of 127.0.0.1 from the fake Bot API, once it listens."""
    fake = FakeTelegram(TOKEN)
    port = free_port()
    webhook = f"http://127.0.0.1:{port}/telegram-hook"
    with running(fake.app()) as url, open(tmp_path / "bot.log", "w+") as log:
        process = start_bot(data_dir, url, log, "--webhook-url", webhook, "--host", "127.0.0.1", "--port", str(port),
                            *options)
        try:
            registered = wait_until(lambda: fake.called("setWebhook") or process.poll() is not None,
                                    what="setWebhook")
            assert process.poll() is None, "the bot stopped"
            assert registered[0]["url"] == webhook and len(registered[0]["secret_token"]) >= 32
            wait_until(lambda: listening(port), what="the webhook's server")
            yield Webhook(fake, webhook, port, registered[0]["secret_token"], tmp_path / "bot.log")
        finally:
            output = stop_bot(process, log)
    assert "Traceback" not in output, output[-3000:]


@pytest.mark.slow
def test_the_bot_takes_updates_from_a_webhook_with_its_secret(built, tmp_path):
    with webhook_bot(built, tmp_path) as hook:
        update = hook.fake.photo(7, photo("barack-obama"))
        assert httpx.post(hook.url, json=update).status_code == 403  # without the secret
        response = httpx.post(hook.url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": hook.secret})
        assert response.status_code == 200
        assert reply(hook.fake, 7).text.startswith("You look like Barack Obama: ")
        assert not hook.fake.called("getUpdates")


@pytest.mark.slow
def test_the_webhook_keeps_the_limits_of_serve(built, tmp_path):
    with webhook_bot(built, tmp_path, "--max-connections", "4", "--header-timeout", "2") as hook:
        head = b"POST /telegram-hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        with_secret = head + f"X-Telegram-Bot-Api-Secret-Token: {hook.secret}\r\n".encode()
        # no secret: refused from its headers, the 50 MB it announces never read
        assert raw_answer(hook.port, head + b"Content-Length: 50000000\r\n\r\n") == b"HTTP/1.1 403 Forbidden"
        too_long = bot.MAX_UPDATE_BYTES + 1
        assert raw_answer(hook.port, with_secret + f"Content-Length: {too_long}\r\n\r\n".encode() + b"{" * too_long) \
            == b"HTTP/1.1 413 Request Entity Too Large"
        # with the secret, 100 MB announced: refused from the header, not waited for
        assert raw_answer(hook.port, with_secret + b"Content-Length: 100000000\r\n\r\n") == \
            b"HTTP/1.1 413 Request Entity Too Large"
        with socket.create_connection(("127.0.0.1", hook.port), timeout=60) as gone:  # goes away mid-body
            gone.sendall(with_secret + b"Content-Length: 1000\r\n\r\n{\"update_id\": ")
            time.sleep(0.2)
        wait_until(lambda: "went away before its update was read" in hook.logged(), what="the disconnect's line")
        assert raw_answer(hook.port, with_secret + b"Content-Length: 8\r\n\r\nnot json") == \
            b"HTTP/1.1 400 Bad Request"
        with contextlib.ExitStack() as stack:  # idle connections: 4 at most, each closed at the header timeout
            idle = [stack.enter_context(socket.create_connection(("127.0.0.1", hook.port), timeout=60))
                    for _ in range(4)]
            time.sleep(0.2)  # let the server accept them
            assert raw_answer(hook.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == \
                b"HTTP/1.1 503 Service Unavailable"
            started = time.monotonic()
            assert [sock.recv(1) for sock in idle] == [b""] * 4 and time.monotonic() - started < 2 + 30
        response = httpx.post(hook.url, json=hook.fake.photo(7, photo("barack-obama")),
                              headers={"X-Telegram-Bot-Api-Secret-Token": hook.secret})
        assert response.status_code == 200 and reply(hook.fake, 7).text.startswith("You look like Barack Obama: ")


def test_the_token_comes_from_the_environment(monkeypatch, built):
    monkeypatch.delenv(bot.TOKEN_VARIABLE, raising=False)
    result = CliRunner().invoke(cli, ["bot", "--data-dir", str(built)])
    assert result.exit_code == 1
    assert result.output == "Error: set LOOKALIKE_BOT_TOKEN to the bot token that @BotFather gave you\n"
    monkeypatch.setenv(bot.TOKEN_VARIABLE, f" {TOKEN}\n")
    assert bot.bot_token() == TOKEN


def test_captions_name_each_face_with_its_percent():
    def face(name, similarity):
        return FaceResult(box=[0, 0, 1, 1], matches=[Match(name.lower(), name, 0.5, similarity, "x.jpg")])
    assert bot.caption([face("Ann", 0.874)]) == "You look like Ann: 87% alike."
    many = bot.caption([face(f"P{i}", 0.5) for i in range(bot.MAX_PANELS + 2)])
    assert many.splitlines()[-1] == "(faces not shown: 2)" and len(many.splitlines()) == bot.MAX_PANELS + 2
    found_late = dataclasses.replace(face("Bob", 0.5), detector="hog-upsampled")
    assert bot.caption([face("Ann", 0.874), found_late]).splitlines()[-1] == bot.HARD_TO_SEE
    assert bot.caption([dataclasses.replace(face("Ann", 0.874), detector="cnn")]).splitlines() == [
        "You look like Ann: 87% alike.", bot.HARD_TO_SEE]


def test_a_caption_of_emoji_names_stays_within_telegrams_utf16_limit():
    """Telegram counts a caption in UTF-16 units: 8 names of 60 emoji were 1,100 of them in 600 characters."""
    emoji = "\U0001F600" * 100
    faces = [FaceResult(box=[0, 0, 1, 1], matches=[Match(f"p{i}", emoji, 0.5, 0.5, "x.jpg")], detector="cnn")
             for i in range(bot.MAX_PANELS + 2)]
    text = bot.caption(faces)
    assert bot.utf16_units(text) <= bot.CAPTION_UNITS < bot.utf16_units(bot.caption_with_names_of(faces, 60))
    lines = text.splitlines()
    assert len(lines) == bot.MAX_PANELS + 3 and lines[-1] == bot.HARD_TO_SEE and lines[-2] == "(faces not shown: 2)"
    assert all(line.endswith("…: 50%") for line in lines[1:bot.MAX_PANELS + 1])  # each name shortened, percent kept


def test_captions_speak_the_language_with_its_percent_sign():
    faces = [FaceResult(box=[0, 0, 1, 1], matches=[Match(f"p{i}", f"Анна {i}", 0.5, 0.874, "x.jpg")],
                        detector="cnn") for i in range(bot.MAX_PANELS + 1)]
    assert bot.caption(faces[:1], "ru").splitlines() == ["Твой двойник — Анна 0: сходство 87\xa0%.",
                                                         translate("ru", bot.HARD_TO_SEE)]
    lines = bot.caption(faces, "de").splitlines()
    assert lines[0] == "Gefundene Gesichter: 9. Von links nach rechts ähneln sie:" and lines[1] == "1. Анна 0: 87\xa0%"
    assert lines[-2] == "(nicht gezeigte Gesichter: 1)" and lines[-1].startswith("(Dein Gesicht war")
