"""What each Lambda function may touch: one declared table, applied by the stack, checked by
tests/infra/test_grants.py against every function's synthesized policy.

Read from the services each function runs (layers_shared/chimera/services/):
- every layer writes its decisions to the ledger (`store.add_decision`), so each has the table
  read/write; the API writes KPIs (POST /kpis) and reads everything else;
- agent bundles are read by discovery alone: it copies each module version (and its
  manifest) into the artifact bucket by digest, and nothing runs a module from the bundles;
- the artifact bucket holds those module versions and large state (optimizer states, big
  generations): discovery writes modules, evolution writes state, execution writes the shards
  a Distributed Map reads and reads its results; refinement writes an agent's history for the
  predictor's training job, reads the model.tar.gz it left and installs the predictor;
  validation (inspect), execution and the
  API's predict (instantiate) read modules; meta-evolution and resources read state;
- events go through the table's outbox (infra_cdk/constructs/outbox.py) except where a
  function publishes directly: execution's and the API's predict publish KpiRecorded;
- the API alone starts (and, for an idempotent retry, describes) optimization cycles, and its
  health check describes the bus;
- refinement consumes the KPI queue (the SQS event source grants it); the guardrail alarms'
  rule may invoke it (a resource policy on the function, not a grant to its role), and its
  guardrail metrics are EMF log lines, so it needs no cloudwatch:PutMetricData.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Access = Literal["read", "read_write"]


@dataclass(frozen=True)
class Grants:
    table: Access | None = None
    bundles: bool = False  # read agent bundles
    artifacts: Access | None = None
    put_events: bool = False  # events:PutEvents on the Chimera bus
    describe_bus: bool = False  # events:DescribeEventBus on the Chimera bus
    start_cycle: bool = False  # states:StartExecution (+ DescribeExecution) of the cycle
    kpi_queue: bool = False  # consume the KPI queue (SQS event source)


GRANTS: dict[str, Grants] = {
    "Discovery": Grants(table="read_write", bundles=True, artifacts="read_write"),
    "Planning": Grants(table="read_write"),
    "Validation": Grants(table="read_write", artifacts="read"),
    "Execution": Grants(table="read_write", artifacts="read_write", put_events=True),
    # predictor-training: exports history for, and installs the model of, its training job.
    "Refinement": Grants(table="read_write", artifacts="read_write", kpi_queue=True),
    "MetaEvolution": Grants(table="read_write", artifacts="read"),
    "Evolution": Grants(table="read_write", artifacts="read_write"),
    "Resources": Grants(table="read_write", artifacts="read"),
    "Api": Grants(
        table="read_write",
        artifacts="read",
        put_events=True,
        describe_bus=True,
        start_cycle=True,
    ),
    # The container-image evolution function (hyperopt and scipy): evolution's grants.
    "Optimizer": Grants(table="read_write", artifacts="read_write"),
}
