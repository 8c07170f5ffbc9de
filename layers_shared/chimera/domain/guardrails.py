"""The canary's guardrails as CloudWatch metrics: the contract between the refinement function,
which publishes them (EMF lines after each KPI batch), and the alarms the CDK app declares.

Agents and experiments come and go; alarms are static. So the metrics carry no experiment
dimension: one value per running experiment a batch touched, under the refinement function's
`service` dimension, and each alarm watches the Maximum. An alarm only triggers a check: the
refinement function then re-reads every running experiment's arm rollups and rolls back those
whose guardrails its own analysis calls breached (`chimera.services.experiments.stop_for_alarm`).

- `GuardrailErrorRateExcess`: candidate error rate minus the incumbent's (a point estimate,
  for the dashboard);
- `GuardrailErrorRateExcessBound`: the always-valid lower bound of that excess, the number the
  analysis compares with `error_rate_margin` (above it: harm shown), so the alarm's threshold
  is that margin;
- `GuardrailLatencyRatio`: the candidate's latency p95 over the incumbent's, published once
  both arms have `min_samples` jobs (as the analysis judges it); the alarm's threshold is
  1 + `latency_p95_margin`.
"""

from __future__ import annotations

import math

from pydantic import Field

from chimera.domain.models import ExperimentId, Frozen, GuardrailConfig, Text

NAMESPACE = "Chimera"
SERVICE = "chimera-refinement"  # Powertools' `service` dimension of the refinement function
DIMENSIONS = {"service": SERVICE}
ERROR_RATE_EXCESS = "GuardrailErrorRateExcess"
ERROR_RATE_EXCESS_BOUND = "GuardrailErrorRateExcessBound"
LATENCY_RATIO = "GuardrailLatencyRatio"
METRICS = (ERROR_RATE_EXCESS, ERROR_RATE_EXCESS_BOUND, LATENCY_RATIO)
ALARMED = (ERROR_RATE_EXCESS_BOUND, LATENCY_RATIO)  # the metrics an alarm watches


def alarm_thresholds(guardrails: GuardrailConfig) -> dict[str, float]:
    """Each alarmed metric's threshold (breaching: greater than it) for these margins."""
    return {
        ERROR_RATE_EXCESS_BOUND: guardrails.error_rate_margin,
        LATENCY_RATIO: 1.0 + guardrails.latency_p95_margin,
    }


class GuardrailReading(Frozen):
    """One running experiment's guardrails now, from its arm rollups."""

    experiment_id: ExperimentId
    agent_id: str
    n_control: int = Field(ge=0)
    n_treatment: int = Field(ge=0)
    error_rate_excess: float | None = Field(
        default=None, description="candidate error rate - incumbent's (None: an arm is empty)"
    )
    error_rate_excess_bound: float | None = Field(
        default=None, description="its always-valid lower bound (None: not bounded yet)"
    )
    latency_ratio: float | None = Field(
        default=None,
        description="candidate p95 / incumbent p95 (None: fewer than min_samples per arm)",
    )
    breach: Text | None = Field(
        default=None, description="why the analysis would roll back on a guardrail now"
    )

    def metrics(self) -> dict[str, float]:
        """The metric values to publish: only those known and finite."""
        values = {
            ERROR_RATE_EXCESS: self.error_rate_excess,
            ERROR_RATE_EXCESS_BOUND: self.error_rate_excess_bound,
            LATENCY_RATIO: self.latency_ratio,
        }
        return {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
