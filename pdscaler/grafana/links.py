"""Links into pdscaler's Grafana dashboard at a window around one decision.

Grafana opens a dashboard at ``/d/<uid>/<slug>`` and reads the time range from ``from`` and
``to`` (Unix milliseconds) and each template variable from ``var-<name>``. The variables
set here are those the generated dashboard defines: ``namespace``, ``policy`` and ``role``.
Pure string work: no I/O, no settings; the caller passes the configured values in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

from pdscaler.domain.errors import InvalidInput

DEFAULT_WINDOW = timedelta(minutes=15)
DASHBOARD_SLUG = "pdscaler"


@dataclass(frozen=True)
class DashboardView:
    """What a dashboard link shows: the dashboard, a time range and the variables."""

    dashboard_uid: str
    time_from: datetime
    time_to: datetime
    namespace: str
    policy: str
    role: str


@dataclass(frozen=True)
class DashboardLinks:
    """Builds links to one dashboard of one Grafana.

    ``base_url`` is Grafana's root URL, a sub-path included
    (``https://example.org/grafana``); ``window`` is how far the range reaches on each side
    of the decision.
    """

    base_url: str
    dashboard_uid: str
    window: timedelta = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if not self.dashboard_uid or "/" in self.dashboard_uid:
            raise InvalidInput(f"dashboard UID {self.dashboard_uid!r} cannot go into a URL path")
        if self.window <= timedelta(0):
            raise InvalidInput("the link window must be positive")

    def decision_url(self, *, decided_at: datetime, namespace: str, policy: str, role: str) -> str:
        """The dashboard from ``decided_at - window`` to ``decided_at + window``."""
        query = urlencode(
            [
                ("orgId", "1"),
                ("from", str(_epoch_ms(decided_at - self.window))),
                ("to", str(_epoch_ms(decided_at + self.window))),
                ("var-namespace", namespace),
                ("var-policy", policy),
                ("var-role", role),
            ]
        )
        return f"{self.base_url.rstrip('/')}/d/{self.dashboard_uid}/{DASHBOARD_SLUG}?{query}"


def parse_dashboard_url(url: str) -> DashboardView:
    """Read back what a link from :meth:`DashboardLinks.decision_url` shows.

    Raises :class:`InvalidInput` for a URL that is not such a link.
    """
    parts = urlsplit(url)
    segments = parts.path.rstrip("/").split("/")
    if "d" not in segments or segments.index("d") + 1 >= len(segments):
        raise InvalidInput(f"not a Grafana dashboard URL: {url}")
    uid = segments[segments.index("d") + 1]
    query = parse_qs(parts.query, strict_parsing=True)
    try:
        return DashboardView(
            dashboard_uid=uid,
            time_from=_from_epoch_ms(_one(query, "from")),
            time_to=_from_epoch_ms(_one(query, "to")),
            namespace=_one(query, "var-namespace"),
            policy=_one(query, "var-policy"),
            role=_one(query, "var-role"),
        )
    except (KeyError, ValueError) as e:
        raise InvalidInput(f"not a pdscaler dashboard link ({e}): {url}") from e


def _one(query: dict[str, list[str]], key: str) -> str:
    values = query[key]
    if len(values) != 1:
        raise ValueError(f"{key} given {len(values)} times")
    return values[0]


def _epoch_ms(at: datetime) -> int:
    if at.tzinfo is None:
        raise InvalidInput("naive datetime: pass timezone-aware UTC times")
    # Whole milliseconds, by integer arithmetic: float seconds would round some instants.
    delta = at - datetime(1970, 1, 1, tzinfo=UTC)
    return delta // timedelta(milliseconds=1)


def _from_epoch_ms(text: str) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(text))
