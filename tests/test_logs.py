"""Structured logs: JSON lines with correlation fields, and secrets that never reach them."""

from __future__ import annotations

import io
import json
import logging
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from pdscaler.config import LogFormat, Settings, SettingsError, load_settings
from pdscaler.control.clock import FakeClock
from pdscaler.domain.errors import Unavailable
from pdscaler.domain.policy import Role, ScaleTargetRef
from pdscaler.domain.signals import ScaleState
from pdscaler.logs import (
    HANDLER_NAME,
    MASK,
    JsonFormatter,
    RedactSecrets,
    configure_logging,
    secrets_of,
)
from pdscaler.store.db import Database
from tests.control.harness import NS, Harness

P, D = Role.PREFILL, Role.DECODE
RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SECRET = "s3cr3t-value"


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """The root logger, with the handler and level configure_logging sets taken back after."""
    root = logging.getLogger()
    level = root.level
    yield root
    for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(handler)
    root.setLevel(level)


def capture(*filters: logging.Filter) -> tuple[logging.Logger, io.StringIO]:
    """A logger of its own whose records are written as JSON lines to a string."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    for f in filters:
        handler.addFilter(f)
    logger = logging.getLogger(f"test.logs.{id(out)}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.DEBUG)
    return logger, out


def lines(out: io.StringIO | str) -> list[dict[str, Any]]:
    text = out if isinstance(out, str) else out.getvalue()
    return [json.loads(line) for line in text.splitlines()]


# --- the JSON format -------------------------------------------------------------------


def test_a_record_is_one_json_line_with_its_correlation_fields() -> None:
    logger, out = capture()
    fields = {"role": "prefill", "policy": "llama", "namespace": "inference",
              "decision_id": 42, "tick_id": "t-1"}  # fmt: skip

    logger.warning("scale of %s failed: %s", "inference/llama-prefill", "busy", extra=fields)

    [entry] = lines(out)
    assert list(entry) == ["time", "level", "logger", "message",
                           "tick_id", "decision_id", "namespace", "policy", "role"]  # fmt: skip
    assert RFC3339_MS_UTC.match(entry["time"])
    assert (entry["level"], entry["logger"]) == ("WARNING", logger.name)
    assert entry["message"] == "scale of inference/llama-prefill failed: busy"
    assert {k: entry[k] for k in fields} == fields


def test_a_record_without_extras_has_no_correlation_fields() -> None:
    logger, out = capture()

    logger.info("tick: %d policies", 3)

    [entry] = lines(out)
    assert set(entry) == {"time", "level", "logger", "message"}


@dataclass
class ExtraCase:
    name: str
    extra: dict[str, Any]
    written: dict[str, Any]


EXTRA_CASES = [
    ExtraCase("numbers and lists as they are", {"attempt": 3, "pods": ["a", "b"]},
              {"attempt": 3, "pods": ["a", "b"]}),
    ExtraCase("an enum of strings as its value", {"role": Role.DECODE}, {"role": "decode"}),
    ExtraCase("an object JSON cannot write as its str", {"target": Path("/x/y")},
              {"target": "/x/y"}),
    ExtraCase("NaN as text, never as invalid JSON", {"ratio": float("nan")}, {"ratio": "nan"}),
    ExtraCase("a fixed key not replaced by an extra", {"level": "fake"}, {"level": "INFO"}),
]  # fmt: skip


@pytest.mark.parametrize("case", EXTRA_CASES, ids=lambda c: c.name)
def test_other_extras_are_written(case: ExtraCase) -> None:
    logger, out = capture()

    logger.info("hello", extra=case.extra)

    [entry] = lines(out)
    assert {k: entry[k] for k in case.written} == case.written


def test_an_exception_is_written_with_its_traceback() -> None:
    logger, out = capture()

    try:
        raise ValueError("bad profile")
    except ValueError:
        logger.exception("policy %s/%s: deciding failed", "inference", "llama")

    [entry] = lines(out)
    assert entry["level"] == "ERROR"
    assert entry["message"] == "policy inference/llama: deciding failed"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: bad profile")


# --- redaction -------------------------------------------------------------------------


@dataclass
class RedactCase:
    name: str
    message: str
    args: tuple[object, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    expected: str = ""


REDACT_CASES = [
    RedactCase("a secret in the message", f"token is {SECRET}!", expected=f"token is {MASK}!"),
    RedactCase("a secret in a string argument", "token is %s", (SECRET,),
               expected=f"token is {MASK}"),
    RedactCase("a secret in an argument's str", "failed: %s", (Unavailable(f"k={SECRET}"),),
               expected=f"failed: k={MASK}"),
    RedactCase("numbers still formatted", "%d pods, key %s", (3, SECRET),
               expected=f"3 pods, key {MASK}"),
    RedactCase("any bearer token", "sent Authorization: Bearer abc.DEF-123_x==; retrying",
               expected=f"sent Authorization: Bearer {MASK}; retrying"),
    RedactCase("a bearer token in a header dict", "headers %s",
               ({"authorization": "bearer eyJhbGciOi"},),
               expected=f"headers {{'authorization': 'bearer {MASK}'}}"),
    RedactCase("a password in a URL", "cannot reach postgresql+psycopg://pd:hunter22@db:5432/pd",
               expected=f"cannot reach postgresql+psycopg://pd:{MASK}@db:5432/pd"),
    RedactCase("a URL without a password left alone", "GET http://prom:9090/api/v1/query?a=b@c",
               expected="GET http://prom:9090/api/v1/query?a=b@c"),
    RedactCase("a secret in a string extra", "hello", extra={"target": f"x-{SECRET}"},
               expected="hello"),
]  # fmt: skip


@pytest.mark.parametrize("case", REDACT_CASES, ids=lambda c: c.name)
def test_secrets_are_redacted(case: RedactCase) -> None:
    logger, out = capture(RedactSecrets([SECRET]))

    logger.warning(case.message, *case.args, extra=case.extra)

    [entry] = lines(out)
    assert entry["message"] == case.expected
    assert SECRET not in out.getvalue()


def test_secrets_are_redacted_in_the_exception_text() -> None:
    logger, out = capture(RedactSecrets([SECRET]))

    try:
        raise RuntimeError(f"connect to https://admin:pa55word@kube failed with {SECRET}")
    except RuntimeError:
        logger.exception("reading its targets failed")

    [entry] = lines(out)
    assert entry["exception"].endswith(
        f"RuntimeError: connect to https://admin:{MASK}@kube failed with {MASK}"
    )
    assert "pa55word" not in out.getvalue()
    assert SECRET not in out.getvalue()


def test_a_longer_secret_containing_a_shorter_one_is_masked_whole() -> None:
    logger, out = capture(RedactSecrets(["abcd", "abcdefgh"]))

    logger.info("key abcdefgh")

    assert lines(out)[0]["message"] == f"key {MASK}"


def test_secrets_shorter_than_four_characters_are_not_masked() -> None:
    logger, out = capture(RedactSecrets(["abc", ""]))

    logger.info("abc is not a secret worth garbling the log for")

    assert lines(out)[0]["message"] == "abc is not a secret worth garbling the log for"


def test_a_record_with_bad_arguments_still_reaches_the_handler() -> None:
    logger, out = capture(RedactSecrets([SECRET]))
    handler = logger.handlers[0]
    errors: list[logging.LogRecord] = []
    handler.handleError = errors.append  # type: ignore[method-assign,assignment]

    logger.info("%d pods", "many")  # the logging module's own error path, as without redaction

    assert len(errors) == 1
    assert out.getvalue() == ""


# --- configure_logging -----------------------------------------------------------------


def test_configure_logging_is_idempotent(
    root_logging: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", LogFormat.TEXT, [])
    configure_logging("WARNING", LogFormat.JSON, [SECRET])

    ours = [h for h in root_logging.handlers if h.get_name() == HANDLER_NAME]
    assert len(ours) == 1
    assert root_logging.level == logging.WARNING
    logging.getLogger("pdscaler.test").warning("key %s", SECRET)
    logging.getLogger("pdscaler.test").info("not at WARNING")
    [entry] = lines(capsys.readouterr().err)  # once, in the format of the last call
    assert entry["message"] == f"key {MASK}"


def test_text_format_keeps_the_plain_line(
    root_logging: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", LogFormat.TEXT, [SECRET])

    logging.getLogger("pdscaler.test").info("tick: %d policies, key %s", 4, SECRET)

    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO pdscaler\.test tick: 4 policies, key \*\*\*\n",
        capsys.readouterr().err,
    )


@pytest.mark.parametrize("value", ["json", "JSON", "text"])
def test_the_log_format_is_read_from_its_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PDSCALER_LOG_FORMAT", value)

    assert load_settings().log_format is LogFormat(value.lower())


def test_an_unknown_log_format_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDSCALER_LOG_FORMAT", "xml")

    with pytest.raises(SettingsError, match="PDSCALER_LOG_FORMAT"):
        load_settings()


# --- the secrets of the settings -------------------------------------------------------


def all_secrets_settings(tmp_path: Path) -> Settings:
    token_file = tmp_path / "token"
    token_file.write_text("kube-token-0123456789\n")
    return load_settings(
        data_dir=tmp_path,
        database={"url": "postgresql+psycopg://pdscaler:db%40pass-42@db.example:5432/pd"},
        prometheus={"bearer_token": "prom-bearer-0123", "username": "scraper",
                    "password": "prom-pass-4567"},
        kubernetes={"host": "https://kube.example", "token_file": token_file},
        api={"cursor_secret": "cursor-secret-89ab"},
        grafana={"api_token": "glsa_grafana-cdef"},
    )  # fmt: skip


def walk_secret_strs(value: object) -> list[str]:
    """Every SecretStr in a settings object, however deep: a new secret field is found too."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, BaseModel):
        return [
            s for name in type(value).model_fields for s in walk_secret_strs(getattr(value, name))
        ]
    if isinstance(value, dict):
        return [s for item in value.values() for s in walk_secret_strs(item)]
    if isinstance(value, list | tuple | set | frozenset):
        return [s for item in value for s in walk_secret_strs(item)]
    return []


def secret_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """The dotted names of the SecretStr fields of a settings model and its groups."""
    found = []
    for name, info in model.model_fields.items():
        types = [info.annotation, *typing.get_args(info.annotation)]
        if SecretStr in types:
            found.append(prefix + name)
        for group in types:
            if isinstance(group, type) and issubclass(group, BaseModel):
                found += secret_fields(group, f"{prefix}{name}.")
    return found


def test_secrets_of_finds_every_secret_of_the_settings(tmp_path: Path) -> None:
    settings = all_secrets_settings(tmp_path)

    found = secrets_of(settings)

    walked = walk_secret_strs(settings)
    # every secret field is set above: a new one fails here until it is
    assert len(walked) == len(secret_fields(Settings)) > 0
    assert set(walked) <= set(found)
    assert {"db%40pass-42", "db@pass-42"} <= set(found)  # as in the URL, and decoded
    assert "kube-token-0123456789" in found
    assert "c2NyYXBlcjpwcm9tLXBhc3MtNDU2Nw==" in found  # base64("scraper:prom-pass-4567")


def test_secrets_of_default_settings_is_the_random_cursor_secret(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)

    assert secrets_of(settings) == [settings.api.cursor_secret.get_secret_value()]


# --- end to end: one controller tick under JSON logging --------------------------------


def test_a_tick_logs_json_lines_that_name_their_policy_and_hold_no_secret(
    db: Database,
    clock: FakeClock,
    tmp_path: Path,
    root_logging: logging.Logger,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = all_secrets_settings(tmp_path)
    secrets = secrets_of(settings)
    configure_logging("INFO", LogFormat.JSON, secrets)
    h = Harness(db, clock)
    h.add_policy(name="llama", prefill=2)  # scales up, and its write fails
    h.add_policy(name="unreadable")  # its targets cannot be read
    h.add_policy(name="buggy")  # reading its targets raises a bug
    h.observe(P, "llama", queuedPrefillTokens=80_000)
    h.observe(D, "llama", kvCacheUtilization=0.75)
    leak = " ".join(secrets) + " Authorization: Bearer not-configured-token"
    h.actuator.fail_next.append(Unavailable(f"PATCH https://u:url-pass-1@kube: {leak}"))
    read_scale = h.actuator.read_scale

    def read(namespace: str, target: ScaleTargetRef) -> ScaleState:
        if target.name.startswith("unreadable"):
            raise Unavailable(f"GET {target.name}: {leak}")
        if target.name.startswith("buggy"):
            raise RuntimeError(f"GET {target.name}: {leak}")
        return read_scale(namespace, target)

    h.actuator.read_scale = read  # type: ignore[method-assign]
    capsys.readouterr()

    h.tick()

    output = capsys.readouterr().err
    entries = lines(output)
    ours = {e["policy"]: e for e in entries if e["logger"] == "pdscaler.control.controller"}
    assert set(ours) == {"llama", "unreadable", "buggy"}
    assert all(e["namespace"] == NS for e in ours.values())
    written = ours["llama"]
    assert written["message"].startswith("scale of inference/llama-prefill failed")
    assert (written["role"], written["tick_id"]) == ("prefill", h.last(P, "llama").record.tick_id)
    assert ours["unreadable"]["level"] == "WARNING"
    assert "RuntimeError" in ours["buggy"]["exception"]
    for secret in [*secrets, "not-configured-token", "url-pass-1"]:
        assert secret not in output


def test_echoed_sql_goes_through_the_root_handler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy import text

    from pdscaler.store.db import create_db_engine

    engine = create_db_engine(f"sqlite:///{tmp_path / 'echo.db'}", echo=True)
    with caplog.at_level(logging.INFO, logger="sqlalchemy.engine"), engine.connect() as c:
        c.execute(text("SELECT 42"))

    assert any("SELECT 42" in r.getMessage() for r in caplog.records)
    assert not logging.getLogger("sqlalchemy.engine").handlers  # none of its own, unredacted
    assert not logging.getLogger("sqlalchemy.engine.Engine").handlers
