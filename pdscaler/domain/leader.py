"""Which replica leads, as the control loop and the health check see it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LeaderStatus:
    leading: bool
    holder: str | None  # who leads, as last seen
    message: str
    term: int = 0  # counts this replica's terms as leader: a new one means others may have acted
