"""Clocks: the system clock for production, a fake one that tests advance by hand."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._monotonic = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, by: timedelta | float) -> None:
        seconds = by.total_seconds() if isinstance(by, timedelta) else float(by)
        if seconds < 0:
            raise ValueError("use jump() to move wall time backwards")
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds

    def jump(self, by: timedelta) -> None:
        """Move wall time only, as an NTP step would; monotonic time is unaffected."""
        self._now += by


class AcceleratedClock:
    """Time that runs ``speed`` times faster than the system's, from ``start``: a
    simulation replayed faster than real time."""

    def __init__(self, speed: float, start: datetime | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = speed
        self.start = start or datetime.now(UTC)
        self._origin = time.monotonic()

    def restart(self) -> None:
        """Start over from now: simulated time 0 is this moment."""
        self.start = datetime.now(UTC)
        self._origin = time.monotonic()

    def elapsed_s(self) -> float:
        """Simulated seconds since ``start``."""
        return (time.monotonic() - self._origin) * self.speed

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed_s())

    def monotonic(self) -> float:
        return self.elapsed_s()
