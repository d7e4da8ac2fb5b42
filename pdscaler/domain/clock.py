"""The Clock seam. Implementations live in ``pdscaler.control.clock``."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall time, timezone-aware UTC: what audit rows record."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: what windows and timeouts use."""
        ...
