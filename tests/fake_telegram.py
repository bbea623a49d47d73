"""A fake Telegram Bot API server for the bot's tests: it delivers updates and records what the bot sends.

It answers the methods the bot uses (getMe, deleteWebhook, setWebhook, getUpdates with long polling, getFile,
file downloads, sendMessage, sendPhoto), as the real Bot API does, over real HTTP on 127.0.0.1. A file's download
can also misbehave (``document(..., download=...)``): drip a byte every 0.1 s for ever, answer 500, or be
unknown to getFile.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

BOT_USER = {"id": 4242, "is_bot": True, "first_name": "Lookalike", "username": "lookalike_test_bot",
            "can_join_groups": False, "can_read_all_group_messages": False, "supports_inline_queries": False}


@dataclass
class Sent:
    """One message the bot sent: when it reached the server, the method, its text fields and any photo."""

    at: float
    method: str
    chat_id: int
    text: str
    photo: bytes | None = None


@dataclass
class FakeTelegram:
    token: str
    files: dict[str, bytes] = field(default_factory=dict)
    downloads: dict[str, str] = field(default_factory=dict)  # file id -> "drip", "error" or "unknown"
    updates: list[dict] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    calls: list[tuple[str, dict]] = field(default_factory=list)
    language_codes: dict[int, str] = field(default_factory=dict)  # chat -> its user's Telegram language_code
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what the tests do -------------------------------------------------------------------------
    def message(self, chat_id: int, kind: str = "message", **content) -> dict:
        """Queue an update with a private message from ``chat_id`` (``kind``: or an ``edited_message``);
        returns the update."""
        with self._lock:
            update_id = next(self._ids)
            update = {"update_id": update_id, kind: {
                "message_id": update_id, "date": int(time.time()), **content,
                "chat": {"id": chat_id, "type": "private", "first_name": f"User {chat_id}"},
                "from": {"id": chat_id, "is_bot": False, "first_name": f"User {chat_id}",
                         **({"language_code": self.language_codes[chat_id]} if chat_id in self.language_codes
                            else {})}}}
            self.updates.append(update)
        return update

    def command(self, chat_id: int, command: str) -> dict:
        return self.message(chat_id, text=command,
                            entities=[{"type": "bot_command", "offset": 0, "length": len(command.split()[0])}])

    def photo(self, chat_id: int, data: bytes, width: int = 225, height: int = 275) -> dict:
        file_id = self.add_file(data)
        return self.message(chat_id, photo=[{"file_id": file_id, "file_unique_id": file_id, "width": width,
                                             "height": height, "file_size": len(data)}])

    def document(self, chat_id: int, data: bytes, name: str, mime: str, size: int | None = None,
                 download: str = "") -> dict:
        file_id = self.add_file(data)
        if download:
            self.downloads[file_id] = download
        return self.message(chat_id, document={"file_id": file_id, "file_unique_id": file_id, "file_name": name,
                                               "mime_type": mime, "file_size": size or len(data)})

    def add_file(self, data: bytes) -> str:
        with self._lock:
            file_id = f"file{len(self.files) + 1}"
            self.files[file_id] = data
        return file_id

    def replies(self, chat_id: int) -> list[Sent]:
        return [sent for sent in self.sent if sent.chat_id == chat_id]

    def called(self, method: str) -> list[dict]:
        return [params for name, params in self.calls if name == method]

    # --- the Bot API -------------------------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/bot{token}/{method}", self.api, methods=["GET", "POST"]),
                                 Route("/file/bot{token}/{path:path}", self.download)])

    async def api(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"}, 401)
        method = request.path_params["method"]
        params, photo = {}, None
        async with request.form() as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    photo = await value.read()
                else:
                    params[key] = value
        self.calls.append((method, params))
        handler = getattr(self, method, None)
        if handler is None:
            return JSONResponse({"ok": False, "error_code": 404, "description": "Not Found"}, 404)
        result = await handler(params, photo) if method == "getUpdates" else handler(params, photo)
        if isinstance(result, JSONResponse):
            return result
        return JSONResponse({"ok": True, "result": result})

    async def download(self, request: Request) -> Response:
        file_id = request.path_params["path"].rsplit("/", 1)[-1].split(".")[0]
        if request.path_params["token"] != self.token or file_id not in self.files:
            return Response(status_code=404)
        if self.downloads.get(file_id) == "error":
            return Response(status_code=500)
        if self.downloads.get(file_id) == "drip":
            return StreamingResponse(self.drip(), media_type="application/octet-stream")
        return Response(self.files[file_id], media_type="application/octet-stream")

    @staticmethod
    async def drip():
        while True:
            yield b"x"
            await asyncio.sleep(0.1)

    def getMe(self, params, photo):
        return BOT_USER

    def deleteWebhook(self, params, photo):
        return True

    def setWebhook(self, params, photo):
        return True

    async def getUpdates(self, params, photo):
        offset = int(params.get("offset", 0))
        deadline = time.monotonic() + min(float(params.get("timeout", 0)), 1.0)
        while True:
            pending = [update for update in list(self.updates) if update["update_id"] >= offset]
            if pending or time.monotonic() >= deadline:
                return pending[:int(params.get("limit", 100))]
            await asyncio.sleep(0.02)

    def getFile(self, params, photo):
        file_id = params["file_id"]
        if file_id not in self.files or self.downloads.get(file_id) == "unknown":
            return JSONResponse({"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"},
                                400)
        return {"file_id": file_id, "file_unique_id": file_id, "file_size": len(self.files[file_id]),
                "file_path": f"documents/{file_id}.jpg"}

    def sendMessage(self, params, photo):
        return self.record("sendMessage", params, params["text"], None)

    def sendPhoto(self, params, photo):
        return self.record("sendPhoto", params, params.get("caption", ""), photo)

    def record(self, method: str, params: dict, text: str, photo: bytes | None) -> dict:
        chat_id = int(params["chat_id"])
        self.sent.append(Sent(time.monotonic(), method, chat_id, text, photo))
        message = {"message_id": next(self._ids), "date": int(time.time()), "chat": {"id": chat_id, "type": "private"},
                   "from": BOT_USER}
        if photo is None:
            message["text"] = text
        else:
            message["caption"] = text
            message["photo"] = [{"file_id": "sent", "file_unique_id": "sent", "width": 1, "height": 1}]
        if "reply_parameters" in params:
            json.loads(params["reply_parameters"])  # well-formed, as Telegram requires
        return message
