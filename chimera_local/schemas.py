"""Writes the generated documents: events/ (a JSON Schema and a sample EventBridge envelope
per event, from the pydantic models) and docs/openapi.json (from the API's resolver).

python -m chimera_local.schemas          regenerate
python -m chimera_local.schemas --check  fail if any is stale (CI)
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

from chimera.api import openapi_document
from chimera.domain.events import EVENT_TYPES, ROUTES, SOURCE, Event
from chimera.domain.models import KpiRecord

REPO = Path(__file__).resolve().parents[1]
EVENTS_DIR = REPO / "events"
OPENAPI = REPO / "docs" / "openapi.json"
AT = "2026-11-21T00:00:00+00:00"
SAMPLE_KPI = KpiRecord(
    agent_id="cartpole-linear",
    genome_version=2,
    job_id="job-42",
    suite="cartpole-v1",
    success=True,
    score=1.0,
    latency_ms=0.8,
    fuel=5231,
    recorded_at=AT,
)  # type: ignore[arg-type]
SAMPLES: dict[str, dict[str, object]] = {
    "AgentDiscovered": {"agent_id": "cartpole-linear", "module_digest": "0" * 64, "changed": True},
    "KpiRecorded": {"record": SAMPLE_KPI.model_dump(mode="json")},
    "EvolutionRunCompleted": {
        "run_id": "cycle-1.cartpole-linear",
        "agent_id": "cartpole-linear",
        "generations": 7,
        "best_fitness": 500.0,
        "decision": "promoted v2 (was v1)",
    },
    "GenomePromoted": {
        "agent_id": "cartpole-linear",
        "version": 2,
        "previous_version": 1,
        "run_id": "cycle-1.cartpole-linear",
    },
    "GenomeRolledBack": {
        "agent_id": "cartpole-linear",
        "from_version": 3,
        "to_version": 2,
        "reason": "p95 latency guardrail",
    },
    "AnomalyDetected": {
        "agent_id": "cartpole-linear",
        "kpi": "latency_ms",
        "value": 12.5,
        "detail": "4.1 sigma above the 1-hour mean",
    },
    "ExperimentConcluded": {
        "experiment_id": "exp-1",
        "agent_id": "cartpole-linear",
        "verdict": "candidate wins",
    },
    "BudgetThresholdReached": {"budget_usd": 25.0, "spent_usd": 20.1, "threshold": 0.8},
}


def render() -> dict[Path, str]:
    files: dict[Path, str] = {}
    for cls in EVENT_TYPES:
        name = cls.detail_type
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": name,
            **cls.model_json_schema(),
        }
        sample: Event = cls.model_validate({**SAMPLES[name], "at": AT})
        # What EventBridge delivers to a target (SQS body, Lambda event) for this event.
        envelope = {
            "version": "0",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"chimera/{name}")),
            "detail-type": name,
            "source": SOURCE,
            "account": "123456789012",
            "time": "2026-11-21T00:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": sample.model_dump(mode="json"),
        }
        files[EVENTS_DIR / f"{name}.schema.json"] = (
            json.dumps(schema, indent=2, sort_keys=True) + "\n"
        )
        files[EVENTS_DIR / f"{name}.sample.json"] = json.dumps(envelope, indent=2) + "\n"
    files[EVENTS_DIR / "routes.json"] = (
        json.dumps([r.model_dump() for r in ROUTES], indent=2) + "\n"
    )
    files[OPENAPI] = openapi_document()
    return files


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [
            str(path.relative_to(REPO))
            for path, text in files.items()
            if not path.exists() or path.read_text() != text
        ]
        if stale:
            print(f"stale: {', '.join(stale)} (run python -m chimera_local.schemas)")
            return 1
        return 0
    for path, text in files.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
