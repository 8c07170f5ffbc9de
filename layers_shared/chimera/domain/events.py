"""Chimera's events and the one routing table used by CDK and by the local bus."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from chimera.domain.models import KpiRecord, utcnow

SOURCE = "chimera"


class Event(BaseModel):
    """Base of every event; `detail_type` is the EventBridge detail-type."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    detail_type: ClassVar[str]
    schema_version: Literal[1] = 1
    at: str = Field(default_factory=lambda: utcnow().isoformat())


class AgentDiscovered(Event):
    detail_type: ClassVar[str] = "AgentDiscovered"
    agent_id: str
    module_digest: str
    changed: bool


class KpiRecorded(Event):
    detail_type: ClassVar[str] = "KpiRecorded"
    record: KpiRecord


class EvolutionRunCompleted(Event):
    detail_type: ClassVar[str] = "EvolutionRunCompleted"
    run_id: str
    agent_id: str
    generations: int
    best_fitness: float | None
    decision: str


class GenomePromoted(Event):
    detail_type: ClassVar[str] = "GenomePromoted"
    agent_id: str
    version: int
    previous_version: int | None
    run_id: str | None = None


class GenomeRolledBack(Event):
    detail_type: ClassVar[str] = "GenomeRolledBack"
    agent_id: str
    from_version: int
    to_version: int
    reason: str
    experiment_id: str | None = None  # the canary that rolled it back (None: an operator)


class AnomalyDetected(Event):
    detail_type: ClassVar[str] = "AnomalyDetected"
    agent_id: str
    kpi: str
    value: float
    detail: str
    genome_version: int | None = None
    kind: Literal["anomaly", "change-point", "trend"] = "anomaly"
    direction: Literal["up", "down"] | None = None
    window: str | None = None  # the KPI window (its start, ISO 8601) the detection was made in
    start: str | None = None  # a change point: the first window of the new regime
    statistic: float | None = None
    threshold: float | None = None


class ExperimentConcluded(Event):
    detail_type: ClassVar[str] = "ExperimentConcluded"
    experiment_id: str
    agent_id: str
    verdict: str
    candidate_version: int | None = None
    incumbent_version: int | None = None
    reason: str = ""
    statistics: dict[str, Any] = {}  # the last analysis: the test, its interval, the counts


class BudgetThresholdReached(Event):
    detail_type: ClassVar[str] = "BudgetThresholdReached"
    budget_usd: float
    spent_usd: float
    threshold: float


EVENT_TYPES: tuple[type[Event], ...] = (
    AgentDiscovered,
    KpiRecorded,
    EvolutionRunCompleted,
    GenomePromoted,
    GenomeRolledBack,
    AnomalyDetected,
    ExperimentConcluded,
    BudgetThresholdReached,
)


class Route(BaseModel):
    """An EventBridge rule: events of `detail_types` go to `target` (a logical name)."""

    model_config = ConfigDict(frozen=True)
    name: str
    detail_types: tuple[str, ...] = ()
    schedule: str | None = None
    target: Literal["refinement-ingest", "optimization-cycle"]
    input: dict[str, Any] | None = None


# Defined once: infra_cdk builds rules from it, the local bus dispatches with it.
ROUTES: tuple[Route, ...] = (
    Route(name="kpis-to-refinement", detail_types=("KpiRecorded",), target="refinement-ingest"),
    Route(
        name="daily-optimization-cycle",
        schedule="rate(1 day)",
        target="optimization-cycle",
        input={"objective": "improve every agent on its suite"},
    ),
)


def to_entry(event: Event, bus_name: str) -> dict[str, Any]:
    return {
        "Source": SOURCE,
        "DetailType": event.detail_type,
        "Detail": event.model_dump_json(),
        "EventBusName": bus_name,
    }
