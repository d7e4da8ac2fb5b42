"""Applied scale changes as Grafana annotations: a tick observer in front of the poster.

It only looks the decisions' ids up (one query, and only in a tick that changed a scale)
and hands the annotations to the poster's queue, which never waits: Grafana being slow
or down costs the tick nothing (see ``grafana.annotations``).
"""

from __future__ import annotations

import logging

from pdscaler.domain.decision import Action, TickSummary
from pdscaler.domain.errors import PdscalerError
from pdscaler.grafana.annotations import AnnotationPoster, scale_annotation
from pdscaler.store.decisions import DecisionStore

log = logging.getLogger(__name__)


class AnnotateScaleChanges:
    def __init__(
        self,
        poster: AnnotationPoster,
        decisions: DecisionStore,
        *,
        dashboard_uid: str | None,
        api_url: str | None,
    ) -> None:
        """``dashboard_uid``: the dashboard the annotations belong to (None: the whole
        organization); ``api_url``: pdscaler's public URL, for the link to each decision."""
        self._poster = poster
        self._decisions = decisions
        self._dashboard_uid = dashboard_uid
        self._api_url = api_url

    def tick_done(self, tick: TickSummary) -> None:
        changes = [r for r in tick.applied if r.action is not Action.NONE]
        if not changes:
            return
        try:
            ids = self._decisions.ids([(r.tick_id, r.role) for r in changes])
        except PdscalerError as e:  # the rows are in the log; the annotations can go
            log.warning("not annotating %d scale changes: %s", len(changes), e)
            return
        for record in changes:
            decision_id = ids.get((record.tick_id, record.role))
            if decision_id is None:
                continue
            self._poster.submit(scale_annotation(record, decision_id,
                                                 dashboard_uid=self._dashboard_uid,
                                                 api_url=self._api_url))  # fmt: skip
