"""Request bodies: a size limit for every route, and JSON or YAML documents for policies."""

from __future__ import annotations

import json
from typing import Any

import yaml
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pdscaler.api.errors import (
    MalformedBody,
    PayloadTooLarge,
    UnsupportedMediaType,
    error_response,
)

JSON_TYPES = frozenset({"application/json", "application/merge-patch+json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 before any route sees it.

    The body is read up front (it is small by construction) and replayed to the app, so a
    chunked upload cannot get past the limit by leaving out Content-Length.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(too_large)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await error_response(too_large)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def media_type(content_type: str | None) -> str:
    return (content_type or "application/json").split(";")[0].strip().lower()


def parse_document(raw: bytes, content_type: str | None) -> Any:
    """Decode a JSON or YAML document; every failure is a 4xx naming the problem."""
    kind = media_type(content_type)
    if kind not in JSON_TYPES | YAML_TYPES:
        accepted = ", ".join(sorted(JSON_TYPES | YAML_TYPES))
        raise UnsupportedMediaType(f"content type {kind!r} is not supported; use {accepted}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedBody(f"body is not valid UTF-8 (byte {e.start})") from None
    if not text.strip():
        raise MalformedBody("body is empty")
    if kind in JSON_TYPES:
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as e:
            raise MalformedBody(
                f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}"
            ) from None
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise MalformedBody(f"malformed YAML: {_one_line(e)}") from None
    if len(documents) != 1:
        raise MalformedBody(f"expected one YAML document, got {len(documents)}")
    return documents[0]


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
