"""Runs the controller's tick on an interval, off the API's threads.

One job, whose body is a single call to ``tick``: never two at once
(``max_instances=1``), and a tick missed while the previous one ran is not made up
(``coalesce=True``). With leader election a second job tries the lease every retry
period; only the leader ticks, and a replica that becomes leader first rebuilds its
history from the decision log (the previous leader's decisions are its own from then on).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler

from pdscaler.control.controller import Controller
from pdscaler.control.ports import Leadership
from pdscaler.domain.clock import Clock

log = logging.getLogger(__name__)

FORECAST_TRAIN_EVERY_S = 1800.0  # how often forecasters are given the metrics history
FORECAST_REFIT_EVERY_S = 30.0  # how often the forecast job looks for series due a fit
FORECAST_BUDGET_S = 10.0  # the most one run of it fits for; the rest wait for the next


@dataclass(frozen=True)
class LoopHealth:
    healthy: bool
    message: str


class Worker(Protocol):
    """A thread of the loop's own, started and stopped with it."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Loop:
    def __init__(
        self,
        controller: Controller,
        interval: timedelta,
        clock: Clock,
        leadership: Leadership | None = None,
        lease_every: timedelta = timedelta(seconds=2),
        pace: float = 1.0,
        workers: Sequence[Worker] = (),
    ) -> None:
        """``pace``: ticks come ``pace`` times as often in real time as ``interval`` says,
        for a ``clock`` that runs that much faster (a simulation replayed quickly).
        ``workers`` (the Grafana annotation poster) start before the first tick and stop
        after the last one."""
        self._controller = controller
        self._interval = interval
        self._clock = clock
        self._leadership = leadership
        self._lease_every = lease_every
        self._pace = pace
        self._workers = tuple(workers)
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._started_at: datetime | None = None
        self._leading = leadership is None
        self._leading_since: datetime | None = None
        self._term = -1  # the term of leadership the history was last rebuilt for
        self._lock = threading.Lock()

    @property
    def job(self) -> Job | None:
        return self._scheduler.get_job("tick")

    def start(self, *, paused: bool = False) -> None:
        """Restore history from the log, then tick every interval (``paused``: not yet)."""
        for worker in self._workers:
            worker.start()
        if self._leadership is None:
            self._controller.restore()
        else:  # the lease runs on real time, whatever the pace
            lease_every = self._lease_every.total_seconds()
            self._every(self.step_lease, lease_every, "lease", first=self._clock.now())
        self._started_at = started = self._clock.now()
        # Forecast models are trained and fitted beside the tick, never in it: a tick only
        # predicts. The history is read at start-up, then every half hour (a replica that
        # stood by has learned nothing live).
        self._every(self.train_forecasts, FORECAST_TRAIN_EVERY_S / self._pace, "train", started)
        self._every(self.refit_forecasts, FORECAST_REFIT_EVERY_S / self._pace, "forecast")
        self._every(self._run, self._interval.total_seconds() / self._pace, "tick", started)
        self._scheduler.start(paused=paused)

    def _every(
        self, job: Callable[[], object], seconds: float, job_id: str, first: datetime | None = None
    ) -> None:
        """Run ``job`` every ``seconds``, never two at once, a run missed while the last one
        ran not made up; the first at ``first`` (None: one interval from now)."""
        when = {} if first is None else {"next_run_time": first}
        self._scheduler.add_job(job, "interval", seconds=seconds, max_instances=1,
                                coalesce=True, id=job_id, **when)  # fmt: skip

    def stop(self) -> None:
        """Stop ticking, then give up the lease so that another replica takes over now."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        if self._leadership is not None:
            self._leadership.release()
        for worker in self._workers:
            worker.stop()

    def run_once(self) -> None:
        """The job's body: one tick; an exception is logged and the loop goes on."""
        self._run()

    def train_forecasts(self) -> None:
        """The training job's body: the forecasters learn the metrics history; a failure
        is logged and the loop goes on."""
        try:
            taken = self._controller.train_forecasts()
        except Exception:  # no history: forecasts learn live, as without it
            log.exception("training forecasts from history failed")
            return
        if taken:
            log.info("forecasts: learned %d values of history", taken)

    def refit_forecasts(self) -> None:
        """The forecast job's body; a failure is logged and the loop goes on."""
        try:
            self._controller.refit_forecasts(budget_s=FORECAST_BUDGET_S)
        except Exception:  # a bad fit must not end the job
            log.exception("refitting forecasts failed")

    def step_lease(self) -> bool:
        """The lease job's body: acquire or renew; returns whether this replica leads."""
        assert self._leadership is not None
        try:
            return self._leadership.step()
        except Exception:  # the lease job must go on; not renewing means stepping down
            log.exception("leader election step failed")
            return False

    @property
    def leading(self) -> bool:
        return self._leadership is None or self._leadership.status().leading

    def _run(self) -> None:
        if not self._take_turn():
            return
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

    def _take_turn(self) -> bool:
        """Whether this replica ticks now; a new term of leadership first rebuilds history."""
        if self._leadership is None:
            return True
        status = self._leadership.status()
        with self._lock:
            was, self._leading = self._leading, status.leading
            # A new term, even one that began after another ended between two ticks: the
            # other leader may have acted meanwhile, so history is rebuilt from the log.
            new_term, self._term = status.term != self._term, status.term
        if status.leading and new_term:
            log.info("leading: rebuilding history from the decision log")
            self._leading_since = self._clock.now()
            self._controller.restore()
        elif was and not status.leading:
            log.warning("no longer leading: %s", status.message)
        return status.leading

    def health(self) -> LoopHealth:
        """Unhealthy when the last completed tick is older than three intervals. A replica
        on standby is healthy: it serves the API while another one leads."""
        if self._leadership is not None:
            status = self._leadership.status()
            if not status.leading:
                return LoopHealth(True, status.message)
        now = self._clock.now()
        last = self._controller.last_tick
        since = max(
            (t for t in (last.at if last else None, self._leading_since, self._started_at) if t),
            default=None,
        )
        if since is None:
            return LoopHealth(False, "the control loop has not started")
        age = now - since
        if age > 3 * self._interval:
            return LoopHealth(False, f"last tick {age.total_seconds():.0f} s ago")
        if last is not None and not last.audited:
            return LoopHealth(False, "the last tick could not write its audit rows")
        return LoopHealth(True, "")
