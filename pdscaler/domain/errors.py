"""pdscaler's own error hierarchy. Boundaries translate vendor errors into these."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of an input, named by its dotted path."""

    field: str
    message: str


class PdscalerError(Exception):
    """Base of every error pdscaler raises on purpose."""

    code = "Error"

    def __init__(self, message: str, *, errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class InvalidInput(PdscalerError):
    """The input is malformed or fails validation."""

    code = "InvalidInput"


class NotFound(PdscalerError):
    code = "NotFound"


class AlreadyExists(PdscalerError):
    code = "AlreadyExists"


class Conflict(PdscalerError):
    """The object changed since the caller read it (optimistic concurrency)."""

    code = "Conflict"


class Unauthenticated(PdscalerError):
    code = "Unauthenticated"


class Forbidden(PdscalerError):
    code = "Forbidden"


class Unavailable(PdscalerError):
    """A dependency (the database, say) cannot be reached right now."""

    code = "Unavailable"


class SchemaOutOfDate(PdscalerError):
    """The database schema is not at the migration head this build expects."""

    code = "SchemaOutOfDate"

    def __init__(self, current: str | None, head: str) -> None:
        super().__init__(
            f"database schema is at revision {current or '(empty database)'}, this pdscaler "
            f"needs {head}: run `pdscaler db upgrade`"
        )
        self.current = current
        self.head = head
