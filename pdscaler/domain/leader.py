"""Which replica leads, as the control loop and the health check see it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LeaderStatus:
    leading: bool
    holder: str | None  # who leads, as last seen
    message: str
