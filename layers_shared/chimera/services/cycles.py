"""Start the optimization cycle on demand (the API's POST /cycles; the schedule does the same)."""

from __future__ import annotations

import uuid

from pydantic import Field

from chimera.domain.errors import UnavailableError
from chimera.domain.models import GateMode, utcnow
from chimera.services.contracts import Msg
from chimera.services.deps import Deps
from chimera.services.views import CycleStarted


class StartCycleRequest(Msg):
    objective: str = Field(default="improve every agent on its suite", min_length=1, max_length=500)
    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,80}$",
        description="execution name; starting again with the same name and input is a no-op",
    )
    gate: GateMode = Field(
        default="improvement",
        description="what the hold-out gate asks of each champion before its canary: "
        "evidence of improvement, or (for a change wanted for another reason) no worse than "
        "the suite's margin",
    )


def start_cycle(req: StartCycleRequest, deps: Deps) -> CycleStarted:
    if deps.workflows is None:
        raise UnavailableError("no workflow engine is configured (CHIMERA_CYCLE_STATE_MACHINE_ARN)")
    name = req.name or f"cycle-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    arn, status = deps.workflows.start_cycle(name, {"objective": req.objective, "gate": req.gate})
    return CycleStarted(execution_id=name, execution_arn=arn, status=status)
