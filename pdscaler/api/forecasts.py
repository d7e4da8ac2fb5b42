"""What each of a policy's series was last forecast with: the model, its parameters, fit
and scores, as recorded after every fit (so it survives a restart)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from pdscaler.api.context import Svc, Viewer
from pdscaler.api.explain import ERRORS
from pdscaler.api.policies import Name, Namespace

router = APIRouter(prefix="/v1/policies", tags=["policies"], responses=ERRORS)


class ForecastModelOut(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    role: str
    signal: str
    model: str
    fitted_at: datetime | None
    recorded_at: datetime
    description: dict[str, Any]


class ForecastModelList(BaseModel):
    items: list[ForecastModelOut]


@router.get(
    "/{namespace}/{name}/forecasts",
    response_model=ForecastModelList,
    response_model_by_alias=True,
)
def list_forecast_models(
    namespace: Namespace, name: Name, svc: Svc, _: Viewer
) -> ForecastModelList:
    svc.policies.get(namespace, name)  # 404 for a policy that does not exist
    records = svc.forecast_models.of_policy(namespace, name)
    return ForecastModelList(
        items=[
            ForecastModelOut(
                role=r.pool.role.value,
                signal=r.signal,
                model=r.model,
                fitted_at=r.fitted_at,
                recorded_at=r.recorded_at,
                description=r.description,
            )
            for r in records
        ]
    )
