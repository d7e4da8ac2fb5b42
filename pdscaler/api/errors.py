"""The one place where errors become HTTP responses.

Every error body has the same shape: ``{"code", "message", "errors": [{"field", "message"}]}``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pdscaler.domain import errors as domain
from pdscaler.domain.errors import FieldError, PdscalerError
from pdscaler.domain.policy import field_path

log = logging.getLogger(__name__)


class MalformedBody(PdscalerError):
    code = "MalformedBody"

    def __init__(self, message: str) -> None:
        super().__init__(message, errors=(FieldError("body", message),))


class UnsupportedMediaType(PdscalerError):
    code = "UnsupportedMediaType"


class PayloadTooLarge(PdscalerError):
    code = "PayloadTooLarge"


STATUS: dict[type[PdscalerError], int] = {
    MalformedBody: 400,
    domain.Unauthenticated: 401,
    domain.Forbidden: 403,
    domain.NotFound: 404,
    domain.AlreadyExists: 409,
    domain.Conflict: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    domain.InvalidInput: 422,
    domain.SchemaOutOfDate: 503,
    domain.Unavailable: 503,
}


def status_of(error: PdscalerError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def error_body(code: str, message: str, errors: Sequence[FieldError] = ()) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "errors": [{"field": e.field, "message": e.message} for e in errors],
    }


def error_response(error: PdscalerError) -> JSONResponse:
    status = status_of(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "5"}
    return JSONResponse(
        error_body(error.code, error.message, error.errors), status_code=status, headers=headers
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(PdscalerError, _on_pdscaler_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_request_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected)


async def _on_pdscaler_error(_request: Request, error: PdscalerError) -> JSONResponse:
    return error_response(error)


async def _on_request_validation(_request: Request, error: RequestValidationError) -> JSONResponse:
    problems = list(error.errors())
    if any(p.get("type") == "json_invalid" for p in problems):
        detail = problems[0].get("ctx", {}).get("error", "malformed JSON")
        return error_response(MalformedBody(f"malformed JSON body: {detail}"))
    fields = tuple(FieldError(_location(p["loc"]), str(p["msg"])) for p in problems)
    first = fields[0]
    return error_response(domain.InvalidInput(f"{first.field}: {first.message}", errors=fields))


def _location(loc: Sequence[str | int]) -> str:
    # FastAPI prefixes the source ('body', 'query', 'path', 'header'); a body field is named
    # by its own path, the others keep the prefix so that `query.limit` is unambiguous.
    if loc and loc[0] == "body":
        return field_path(loc[1:]) or "body"
    return field_path(loc)


async def _on_http_exception(_request: Request, error: StarletteHTTPException) -> JSONResponse:
    code = {400: "MalformedBody", 404: "NotFound", 405: "MethodNotAllowed"}.get(
        error.status_code, "HttpError"
    )
    return JSONResponse(
        error_body(code, str(error.detail)),
        status_code=error.status_code,
        headers=getattr(error, "headers", None),
    )


async def _on_unexpected(_request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=error)
    return JSONResponse(error_body("InternalError", "internal error"), status_code=500)
