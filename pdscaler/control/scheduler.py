"""Runs the controller's tick on an interval, off the API's threads.

One job, whose body is a single call to ``tick``: never two at once
(``max_instances=1``), and a tick missed while the previous one ran is not made up
(``coalesce=True``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler

from pdscaler.control.controller import Controller
from pdscaler.domain.clock import Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopHealth:
    healthy: bool
    message: str


class Loop:
    def __init__(self, controller: Controller, interval: timedelta, clock: Clock) -> None:
        self._controller = controller
        self._interval = interval
        self._clock = clock
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._started_at: datetime | None = None

    @property
    def job(self) -> Job | None:
        return self._scheduler.get_job("tick")

    def start(self, *, paused: bool = False) -> None:
        """Restore history from the log, then tick every interval (``paused``: not yet)."""
        self._controller.restore()
        self._started_at = self._clock.now()
        self._scheduler.add_job(
            self._run,
            "interval",
            seconds=self._interval.total_seconds(),
            max_instances=1,
            coalesce=True,
            id="tick",
            next_run_time=self._started_at,
        )
        self._scheduler.start(paused=paused)

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def run_once(self) -> None:
        """The job's body: one tick; an exception is logged and the loop goes on."""
        self._run()

    def _run(self) -> None:
        try:
            report = self._controller.tick()
        except Exception:  # a tick that raises must not end the loop; it is logged
            log.exception("tick failed")
            return
        log.info(
            "tick: %d policies, %d decisions, %d writes, %d failures",
            report.policies,
            report.decisions,
            report.writes,
            report.failures,
        )

    def health(self) -> LoopHealth:
        """Unhealthy when the last completed tick is older than three intervals."""
        now = self._clock.now()
        last = self._controller.last_tick
        since = last.at if last else self._started_at
        if since is None:
            return LoopHealth(False, "the control loop has not started")
        age = now - since
        if age > 3 * self._interval:
            return LoopHealth(False, f"last tick {age.total_seconds():.0f} s ago")
        if last is not None and not last.audited:
            return LoopHealth(False, "the last tick could not write its audit rows")
        return LoopHealth(True, "")
