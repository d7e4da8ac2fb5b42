"""Leader election with a coordination.k8s.io/v1 Lease, as Kubernetes controllers do it.

Every replica serves the API; only the leader runs the control loop and writes
``/scale``. Timing follows client-go's defaults: a lease lasts 15 s, the leader must renew
it within 10 s or step down, and every replica tries again every 2 s. Another replica's
lease is judged expired by this replica's own clock, from when it last saw the lease
change (so clock skew between nodes does not matter). Before each write the leader reads
the lease once more to confirm it still holds it. On a clean stop it releases the lease
so that another replica takes over at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pdscaler.actuator.transport import Json, Transport
from pdscaler.domain.clock import Clock
from pdscaler.domain.errors import Conflict, NotFound, PdscalerError
from pdscaler.domain.leader import LeaderStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: timedelta = timedelta(seconds=15)
    renew_deadline: timedelta = timedelta(seconds=10)
    retry_period: timedelta = timedelta(seconds=2)


class LeaseElector:
    """Call :meth:`step` every retry period (the loop's scheduler does)."""

    def __init__(self, transport: Transport, config: LeaseConfig, clock: Clock) -> None:
        self._transport = transport
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._renewed_at: datetime | None = None  # last successful acquire or renew
        self._observed: Json | None = None  # the lease spec as last seen
        self._observed_at: datetime | None = None  # when it was first seen as it is
        self._version: str | None = None
        self._error: str | None = None
        self._term = 0

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.config.namespace}/leases"

    def is_leader(self) -> bool:
        """Holding the lease, renewed within the renew deadline (a local check)."""
        with self._lock:
            return self._leading_at(self._clock.now())

    def step(self) -> bool:
        """Try to acquire the lease, or renew it; returns whether this replica leads."""
        now = self._clock.now()
        try:
            leading = self._try_acquire_or_renew(now)
        except PdscalerError as e:
            with self._lock:
                self._error = f"{e.code}: {e.message}"
                leading = self._leading_at(now)
            log.warning("lease %s/%s: %s", self.config.namespace, self.config.name, e)
            return leading
        with self._lock:
            self._error = None
            if leading:
                if not self._leading_at(now):  # a new term: acquired, or renewed too late
                    self._term += 1
                self._renewed_at = now
            return self._leading_at(now)

    def confirm(self) -> bool:
        """Read the lease once more: still ours and not expired? Called before a write."""
        if not self.is_leader():
            return False
        try:
            lease = self._transport.request("GET", f"{self.path}/{self.config.name}")
        except PdscalerError as e:
            log.warning("cannot confirm the lease before writing: %s", e)
            return False
        spec = lease.get("spec", {})
        return spec.get("holderIdentity") == self.config.identity and self.is_leader()

    def release(self) -> None:
        """Give the lease up (a clean stop), so that another replica need not wait it out."""
        with self._lock:
            leading, version = self._renewed_at is not None, self._version
            self._renewed_at = None
        if not leading or version is None:
            return
        now = _micro_time(self._clock.now())
        spec = {"holderIdentity": None, "leaseDurationSeconds": 1,
                "acquireTime": now, "renewTime": now,
                "leaseTransitions": (self._observed or {}).get("leaseTransitions", 0)}  # fmt: skip
        try:
            self._put(spec, version)
        except PdscalerError as e:
            log.warning("could not release the lease: %s", e)

    def status(self) -> LeaderStatus:
        with self._lock:
            leading = self._leading_at(self._clock.now())
            holder = (self._observed or {}).get("holderIdentity") or None
            error, term = self._error, self._term
        if leading:
            return LeaderStatus(True, holder, "leading", term)
        message = f"standby; the leader is {holder}" if holder else "standby; no leader yet"
        if error:
            message += f" (lease: {error})"
        return LeaderStatus(False, holder, message, term)

    # -- the election ----------------------------------------------------------------------

    def _leading_at(self, now: datetime) -> bool:
        renewed = self._renewed_at
        return renewed is not None and now - renewed <= self.config.renew_deadline

    def _try_acquire_or_renew(self, now: datetime) -> bool:
        me = self.config.identity
        try:
            lease = self._transport.request("GET", f"{self.path}/{self.config.name}")
        except NotFound:
            spec = self._spec(now, acquire=now, transitions=0)
            created = self._transport.request("POST", self.path, self._body(spec, None))
            self._observe(created, now)
            log.info("lease %s: acquired by %s (created)", self.config.name, me)
            return True
        spec = lease.get("spec", {})
        self._observe(lease, now)
        holder = spec.get("holderIdentity") or None
        if holder is not None and holder != me:
            with self._lock:
                observed_at = self._observed_at or now
                self._renewed_at = None
            duration = timedelta(seconds=spec.get("leaseDurationSeconds") or 0)
            if observed_at + duration > now:
                return False  # held by someone else, and not expired by our clock
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == me:
            acquire = spec.get("acquireTime") or _micro_time(now)
        else:
            acquire, transitions = _micro_time(now), transitions + 1
        try:
            updated = self._put(
                self._spec(now, acquire=acquire, transitions=transitions),
                lease.get("metadata", {}).get("resourceVersion"),
            )
        except Conflict:
            return False  # another replica wrote first; try again next period
        self._observe(updated, now)
        if holder != me:
            log.info("lease %s: acquired by %s (was %s)", self.config.name, me, holder)
        return True

    def _spec(self, now: datetime, *, acquire: datetime | str, transitions: int) -> Json:
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": int(self.config.lease_duration.total_seconds()),
            "acquireTime": acquire if isinstance(acquire, str) else _micro_time(acquire),
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }

    def _put(self, spec: Json, version: str | None) -> Json:
        return self._transport.request(
            "PUT", f"{self.path}/{self.config.name}", self._body(spec, version)
        )

    def _body(self, spec: Json, version: str | None) -> Json:
        metadata: Json = {"name": self.config.name, "namespace": self.config.namespace}
        if version is not None:
            metadata["resourceVersion"] = version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": metadata, "spec": spec}  # fmt: skip

    def _observe(self, lease: Json, now: datetime) -> None:
        spec = lease.get("spec", {})
        with self._lock:
            if spec != self._observed:
                self._observed, self._observed_at = spec, now
            self._version = lease.get("metadata", {}).get("resourceVersion")


def _micro_time(at: datetime) -> str:
    """metav1.MicroTime, as the API server writes it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
