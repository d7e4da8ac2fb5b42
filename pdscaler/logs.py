"""Process logging: text or JSON lines on stderr, with secrets redacted.

The CLI configures it once, at start-up, from the settings. The rest of the code logs
with the standard library only, and passes correlation fields as ``extra=``: the
controller names the policy (``namespace``, ``policy``), the pool (``role``) and the
decision rows (``tick_id``) a line is about. The JSON format writes every such field;
the text format keeps one plain line a record.

Every record goes through :class:`RedactSecrets` before it is formatted, whatever logged
it (pdscaler, uvicorn, httpx, the Kubernetes client): the configured secrets, bearer
tokens and passwords inside URLs never reach the output.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

from pdscaler.config import LogFormat, Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
MASK = "***"
HANDLER_NAME = "pdscaler"  # the root handler configure_logging installs, found again by name
# Shorter values are not redacted: masking every "abc" would garble the log and hide little.
MIN_SECRET_CHARS = 4
# The fields that tie a line to the decision log, written first and in this order.
CORRELATION_FIELDS = ("tick_id", "decision_id", "namespace", "policy", "role")

# What every LogRecord carries; anything else on a record came in through ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_RESERVED = ("time", "level", "logger", "message", "exception", "stack")
# An Authorization header's value (RFC 6750 token syntax), whatever the case of the scheme.
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*")
# The password of scheme://user:password@host.
_URL_PASSWORD = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)[^\s/?#@]+@")
_TRACEBACKS = logging.Formatter()


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (RFC 3339, UTC, milliseconds), ``level``,
    ``logger``, ``message``, the correlation fields and any other ``extra=`` field
    present, then ``exception`` (the formatted traceback) when there is one.

    An extra that JSON cannot represent is written as its ``str``. An extra named like one
    of the fixed keys does not replace it.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extras = _extras(record)
        for key in (*CORRELATION_FIELDS, *sorted(extras)):
            if key in extras and key not in entry and key not in _RESERVED:
                entry[key] = _jsonable(extras[key])
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, allow_nan=False)


class RedactSecrets(logging.Filter):
    """Replaces secrets with ``***`` in a record's message (its arguments merged in),
    its exception and stack text and its string extras, before any formatter sees them.

    Besides the ``secrets`` given (those of at least :data:`MIN_SECRET_CHARS` characters),
    it masks any bearer token and the password of any ``scheme://user:password@host`` URL.
    The record is changed in place and always passed on.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so that a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len,
                               reverse=True)  # fmt: skip

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        text = _BEARER.sub(rf"\g<1>{MASK}", text)
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad arguments: left for the handler to report, as without us
            return True
        # An argument may be anything whose str() holds a secret (an exception, a URL): the
        # message is redacted with its arguments merged in, and carries them from now on.
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to ``sys.stderr`` as it is when each record comes, not as it was when the
    handler was made (a test, or an embedding program, may replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _stream: TextIO) -> None:
        pass


def configure_logging(level: str, fmt: LogFormat, secrets: Iterable[str]) -> None:
    """Send the root logger's records to stderr in ``fmt``, at ``level``, with ``secrets``
    redacted. Idempotent: a second call reconfigures the same handler instead of adding one.
    Handlers installed by others are left in place."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == HANDLER_NAME), None)
    if handler is None:
        handler = _StderrHandler()
        handler.set_name(HANDLER_NAME)
        root.addHandler(handler)
    handler.setFormatter(
        JsonFormatter() if fmt is LogFormat.JSON else logging.Formatter(TEXT_FORMAT)
    )
    for old in list(handler.filters):
        handler.removeFilter(old)
    handler.addFilter(RedactSecrets(secrets))
    root.setLevel(level)


def secrets_of(settings: Settings) -> list[str]:
    """Every secret the settings hold, for :class:`RedactSecrets`.

    That is every ``SecretStr`` anywhere in the settings, found by walking them (so a new
    secret field is covered without a change here), the Prometheus basic-auth header
    value, the password inside the database URL, and the Kubernetes bearer token read from
    its token file. API tokens are configured as digests only, which are not secrets.
    """
    found = [s.get_secret_value() for s in _secret_values(settings)]
    prometheus = settings.prometheus
    if prometheus.username and prometheus.password:
        pair = f"{prometheus.username}:{prometheus.password.get_secret_value()}"
        found.append(base64.b64encode(pair.encode()).decode())
    password = _url_password(settings.database.url)
    if password:
        found += [password, unquote(password)]
    token = _read_token(settings.kubernetes.token_file)
    if token:
        found.append(token)
    return [s for s in dict.fromkeys(found) if s]


def _secret_values(value: object) -> Iterator[SecretStr]:
    if isinstance(value, SecretStr):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secret_values(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secret_values(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _secret_values(item)


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _read_token(path: Path | None) -> str | None:
    """The token file's content at start-up; a rotated token is still masked as a bearer
    token wherever it shows up in a header."""
    if path is None:
        return None
    try:
        return path.read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}


def _jsonable(value: object) -> object:
    """``value`` if JSON represents it as it is (no NaN or infinity), else its ``str``."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return str(value)
    return value


def _rfc3339(created: float) -> str:
    at = datetime.fromtimestamp(created, tz=UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
