"""Layer 8's price table, cost model and placement decision (pure).

The prices are data: `prices_2026_11.json` (us-east-1, dated 2026-11), loaded and validated
here (a bad table is refused naming the field). A segment of an evolution run (some
generations of one run) costs, on each placement:

- compute: on Lambda, GB-seconds at the evaluation function's real architecture and memory
  (Lambda gives one full vCPU at 1,769 MB; an evaluation is single-threaded, so below that it
  runs slower by the ratio and above it no faster) plus the per-request charge; after the
  segment ran, the evaluator's seconds are the shards' measured ones (`Work.evaluator_s`)
  where they were timed; on an
  instance (Batch g5.xlarge spot / on-demand, SageMaker managed spot), the instance-seconds
  of each job, start-up included (one job where the segment machine submits one per segment,
  one per generation where it submits one per generation: counted from the ASL), plus the
  expected re-work of spot interruptions (each costs a new start-up and, with a checkpoint
  after every generation, half a generation);
- orchestration: Step Functions standard transitions, counted from the deployed ASL's shape
  (`flow_shape`: each state entered is one transition, an inline Map's iteration adds only its
  states, a Distributed Map's child execution adds one), the orchestration Lambdas (ask, tell,
  adapt per generation; place and commit per segment), DynamoDB request units and S3 requests
  per generation.

A predictor-training execution's SageMaker job (`training_cost`) is priced the same way: the
managed-spot instance-seconds (estimated from rows x epochs, or the job's measured billable
seconds) plus the execution's transitions, Lambdas and requests.

The GPU placements' speed-up over one Lambda vCPU is a parameter of the table
(`gpu_speedup`): 1.0, the CPU path's throughput, until the torch twin's benchmark measures it.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from chimera.domain.errors import ValidationFailedError

Architecture = Literal["x86_64", "arm64"]
Route = Literal["lambda", "batch", "sagemaker"]  # what the segment machine's Choice reads
PRICES_FILE = Path(__file__).with_name("prices_2026_11.json")
LAMBDA = "lambda"


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LambdaPrices(_Data):
    usd_per_gb_second: dict[Architecture, float]
    usd_per_request: float = Field(gt=0, lt=0.001)
    full_vcpu_mb: int = Field(ge=128, le=10_240)
    memory_mb: tuple[int, int]
    invocation_overhead_s: float = Field(ge=0, le=60)
    orchestration_task_s: float = Field(ge=0, le=60)
    note: str = ""

    @model_validator(mode="after")
    def _positive(self) -> LambdaPrices:
        for arch, usd in self.usd_per_gb_second.items():
            if not 0 < usd < 0.01:
                raise ValueError(f"usd_per_gb_second.{arch}: {usd} is not a GB-second price")
        return self


class StepFunctionsPrices(_Data):
    usd_per_standard_transition: float = Field(gt=0, lt=0.01)
    usd_per_express_request: float = Field(ge=0, lt=0.01)
    transition_latency_s: float = Field(ge=0, le=10)
    note: str = ""


class DynamoDbPrices(_Data):
    usd_per_write_request_unit: float = Field(gt=0, lt=0.001)
    usd_per_read_request_unit: float = Field(gt=0, lt=0.001)


class S3Prices(_Data):
    usd_per_put: float = Field(gt=0, lt=0.001)
    usd_per_get: float = Field(gt=0, lt=0.001)


class InstancePrice(_Data):
    name: str = Field(min_length=1, max_length=64)
    service: Literal["batch", "sagemaker"]
    instance_type: str = Field(min_length=1)
    usd_per_hour: float = Field(gt=0, le=1000)
    startup_s: float = Field(ge=0, le=3600)
    interruptions_per_hour: float = Field(ge=0, le=10)
    note: str = ""


class Speedup(_Data):
    value: float = Field(gt=0, le=10_000)
    source: str = Field(min_length=1)


class PriceTable(_Data):
    region: str
    dated: str = Field(pattern=r"^\d{4}-\d{2}$")
    notes: str = ""
    lambda_: LambdaPrices = Field(alias="lambda")
    step_functions: StepFunctionsPrices
    dynamodb: DynamoDbPrices
    s3: S3Prices
    instances: tuple[InstancePrice, ...] = Field(min_length=1)
    gpu_speedup: Speedup

    @model_validator(mode="after")
    def _unique(self) -> PriceTable:
        names = [i.name for i in self.instances]
        if len(set(names)) != len(names) or LAMBDA in names:
            raise ValueError(f"instances: names must be unique and not {LAMBDA!r}: {names}")
        return self

    def instance(self, name: str) -> InstancePrice:
        for inst in self.instances:
            if inst.name == name:
                return inst
        raise ValidationFailedError("placement", f"{name!r} is not priced in {self.dated}")

    @property
    def placements(self) -> tuple[str, ...]:
        return (LAMBDA, *(i.name for i in self.instances))


def parse_prices(data: Mapping[str, Any]) -> PriceTable:
    """A price table from its JSON document; ValidationFailedError naming the bad field."""
    try:
        return PriceTable.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "prices"
        raise ValidationFailedError(f"prices.{where}", str(err["msg"])) from None


def load_prices(path: Path | None = None) -> PriceTable:
    """The dated table (the bundled one by default), validated."""
    if path is None:
        return _bundled()
    return _load(path)


@functools.cache
def _bundled() -> PriceTable:
    return _load(PRICES_FILE)


def _load(path: Path) -> PriceTable:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValidationFailedError("prices", f"{path.name}: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationFailedError("prices", f"{path.name}: not a JSON object")
    return parse_prices(data)


# -- the shape of the work, read off the ASL ---------------------------------------------------
class FlowShape(_Data):
    """What one generation, and one segment around it, make a state machine do on a route.

    `per_generation` / `per_segment`: states entered (standard transitions) in the generation
    loop / once per segment; `per_item`: transitions per Map item (a shard); `*_lambdas`:
    Lambda tasks outside Map items; `item_lambdas`: Lambda tasks per item; `*_jobs`: Batch or
    SageMaker `.sync` jobs; `express_per_item`: Express child executions per item.
    """

    per_generation: int = 0
    per_segment: int = 0
    per_item: int = 0
    generation_lambdas: int = 0
    segment_lambdas: int = 0
    item_lambdas: int = 0
    generation_jobs: int = 0
    segment_jobs: int = 0
    express_per_item: int = 0

    def plus(self, other: FlowShape) -> FlowShape:
        return FlowShape(
            **{k: getattr(self, k) + getattr(other, k) for k in type(self).model_fields}
        )


def _is_lambda(resource: str) -> bool:
    return (
        resource.endswith("FunctionArn}")
        or resource.startswith("arn:aws:lambda:")
        or resource.startswith("arn:aws:states:::lambda:invoke")
    )


def _is_job(resource: str) -> bool:
    return "batch:submitJob" in resource or "sagemaker:createTrainingJob" in resource


def _decided(rule: Mapping[str, Any], facts: Mapping[str, Any]) -> bool | None:
    """A Choice rule's answer where `facts` know its variable (None where they do not)."""
    variable = str(rule.get("Variable"))
    if variable not in facts:
        return None
    for test in ("StringEquals", "BooleanEquals", "NumericEquals"):
        if test in rule:
            return bool(facts[variable] == rule[test])
    return None


def _leads_back(states: Mapping[str, Any], start: str | None, seen: Mapping[str, int]) -> bool:
    """Does following Next (a Choice's Default) from `start` reach a state already walked?"""
    name, steps = start, 0
    while name is not None and steps <= len(states):
        if name in seen:
            return True
        state = states[name]
        name = state.get("Default") if state["Type"] == "Choice" else state.get("Next")
        steps += 1
    return False


def _trace(
    states: Mapping[str, Any], start: str, facts: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """States walked on the success path: (the loop's states, the others).

    A Choice rule on a variable `facts` know is decided by them (`$.placement`: the route);
    any other rule is taken if it leads back to a walked state (the loop), and the Choice's
    Default when the loop is done.
    """
    order: list[str] = []
    seen: dict[str, int] = {}
    loop: tuple[int, int] | None = None
    exit_to: str | None = None
    name: str | None = start
    while name is not None:
        if name in seen:  # the loop closed: go on from its exit
            loop = (seen[name], len(order))
            name, exit_to = exit_to, None
            continue
        seen[name] = len(order)
        order.append(name)
        state = states[name]
        kind = state["Type"]
        if kind in ("Succeed", "Fail") or state.get("End"):
            break
        if kind != "Choice":
            name = state.get("Next")
            continue
        pick = None
        for rule in state.get("Choices", []):
            answer = _decided(rule, facts)
            if answer is not None:
                if answer:
                    pick = rule["Next"]
                    break
            elif loop is None and _leads_back(states, rule.get("Next"), seen):
                pick, exit_to = rule["Next"], state.get("Default")
                break
        name = pick if pick is not None else state.get("Default")
    if loop is None:
        return [], order
    inside = order[loop[0] : loop[1]]
    return inside, [s for s in order if s not in inside]


def flow_shape(
    asl: Mapping[str, Any],
    route: str = LAMBDA,
    distributed: bool = False,
    facts: Mapping[str, Any] | None = None,
) -> FlowShape:
    """Count a machine's transitions, Lambda tasks and jobs from its states, on `route`
    (`$.placement`), with the shards in a Distributed Map or not (`$.staged.distributed`);
    `facts` decide further Choice variables (predictor-training's `$.export.exported`)."""
    facts = {"$.placement": route, "$.staged.distributed": distributed, **(facts or {})}
    states = asl["States"]
    inside, outside = _trace(states, asl["StartAt"], facts)
    shape = FlowShape()
    for names, where in ((inside, "generation"), (outside, "segment")):
        count = {"transitions": len(names), "lambdas": 0, "jobs": 0}
        for name in names:
            state = states[name]
            resource = str(state.get("Resource", ""))
            count["lambdas"] += state["Type"] == "Task" and _is_lambda(resource)
            count["jobs"] += state["Type"] == "Task" and _is_job(resource)
            if state["Type"] == "Map":
                shape = shape.plus(_map_items(state))
        shape = shape.plus(
            FlowShape(
                **{
                    f"per_{where}": count["transitions"],
                    f"{where}_lambdas": count["lambdas"],
                    f"{where}_jobs": count["jobs"],
                }
            )
        )
    return shape


def _map_items(state: Mapping[str, Any]) -> FlowShape:
    processor = state.get("ItemProcessor") or state.get("Iterator") or {}
    config = processor.get("ProcessorConfig", {})
    inner = flow_shape(processor) if processor else FlowShape()
    per_item = inner.per_segment + inner.per_generation
    lambdas = inner.segment_lambdas + inner.generation_lambdas
    if config.get("Mode") == "DISTRIBUTED":
        if config.get("ExecutionType") == "EXPRESS":  # priced per request, not per transition
            return FlowShape(per_item=1, item_lambdas=lambdas, express_per_item=1)
        return FlowShape(per_item=1 + per_item, item_lambdas=lambdas)
    return FlowShape(per_item=per_item, item_lambdas=lambdas)


# -- the cost model ----------------------------------------------------------------------------
class Work(_Data):
    """A segment's work: predicted (the estimate) or counted after it ran (the actual)."""

    generations: int = Field(ge=0, le=100_000)
    population: int = Field(ge=1, le=100_000)
    seconds_per_evaluation: float = Field(gt=0, le=3600)
    shard_size: int = Field(ge=1, le=10_000)
    measured_s: float | None = Field(
        default=None, ge=0, description="an instance job's measured wall time, start-up included"
    )
    evaluator_s: float | None = Field(
        default=None,
        ge=0,
        description="Lambda only: the evaluator's measured seconds, summed over the shards "
        "that were timed (each invoke's duration rounded up to the millisecond, as billed); "
        "those shards' evaluations are `measured_evaluations`, the rest are counted",
    )
    measured_evaluations: int = Field(
        default=0, ge=0, description="the evaluations `evaluator_s` covers"
    )

    @property
    def shards(self) -> int:
        return -(-self.population // self.shard_size)


# DynamoDB request units and S3 requests per generation, read off the store calls of ask,
# evaluate, tell and adapt (a transactional write costs 2 WRU an item; documents under 1 KB
# but a generation's, which takes ~4): ask writes the generation and the run (4 WRU) and reads
# the run and the optimizer (2 RRU); each shard reads the run, the generation and the agent
# (3 RRU), gets the module's blob (1 S3 GET) and writes its fitness (1 WRU); tell writes the
# generation, its fitness point and the run (6 WRU) after reading the shards (1 RRU each); on
# an instance, one job does the same in process and checkpoints its state (1 S3 PUT).
WRU_PER_GENERATION, WRU_PER_SHARD = 10, 1
RRU_PER_GENERATION, RRU_PER_SHARD = 2, 4
# evolution-run's loop, once per segment whatever the placement: FirstSegment/NextSegment,
# Place, Route, the RunSegment task, CommitCost, Progress and MoreGenerations; place,
# commit_cost and Layer 6's adapt are Lambdas (tests/unit/test_prices.py counts them).
OUTER_PER_SEGMENT = FlowShape(per_segment=7, segment_lambdas=3)


class Cost(_Data):
    placement: str
    route: Route
    seconds: float = Field(description="wall time of the segment")
    usd: float
    compute_usd: float
    requests_usd: float
    transitions: int
    transitions_usd: float
    dynamodb_usd: float
    s3_usd: float
    jobs: int
    rework_usd: float
    speedup: float
    meets_deadline: bool = True


def lambda_speed(table: PriceTable, memory_mb: int, architecture: str) -> float:
    """One evaluation's speed on a Lambda of this size, relative to a full vCPU."""
    low, high = table.lambda_.memory_mb
    if not low <= memory_mb <= high:
        raise ValidationFailedError("lambda_memory_mb", f"{memory_mb} is not in [{low}, {high}]")
    if architecture not in table.lambda_.usd_per_gb_second:
        raise ValidationFailedError(
            "lambda_architecture",
            f"{architecture!r} is not one of {sorted(table.lambda_.usd_per_gb_second)}",
        )
    return min(1.0, memory_mb / table.lambda_.full_vcpu_mb)


def segment_cost(
    table: PriceTable,
    placement: str,
    work: Work,
    shape: FlowShape,
    *,
    memory_mb: int = 1769,
    architecture: str = "x86_64",
    gpu_speedup: float | None = None,
) -> Cost:
    """The cost and wall time of `work` on `placement`, the segment machine doing `shape`."""
    lam, sfn = table.lambda_, table.step_functions
    speed = lambda_speed(table, memory_mb, architecture)
    gb = memory_mb / 1024
    usd_gb_s = lam.usd_per_gb_second[architecture]  # type: ignore[index]
    g, k = work.generations, work.shards
    shape = shape.plus(OUTER_PER_SEGMENT)
    items = k * g if placement == LAMBDA else 0
    transitions = shape.per_generation * g + shape.per_segment + shape.per_item * items
    orchestration = shape.generation_lambdas * g + shape.segment_lambdas
    requests = orchestration + shape.item_lambdas * items
    lambda_s = orchestration * lam.orchestration_task_s
    wall = transitions * sfn.transition_latency_s + orchestration * lam.orchestration_task_s
    wru = g * WRU_PER_GENERATION + items * WRU_PER_SHARD
    rru = g * RRU_PER_GENERATION + items * RRU_PER_SHARD
    gets, puts = items, 0
    rework_usd, jobs = 0.0, 0
    evaluation_s = g * work.population * work.seconds_per_evaluation
    if placement == LAMBDA:
        route: Route = "lambda"
        if work.evaluator_s is None:  # counted: the suite's figure at this Lambda's speed
            lambda_s += evaluation_s / speed + items * lam.invocation_overhead_s
        else:  # measured where timed; the evaluations it does not cover counted as above
            counted = max(0, g * work.population - work.measured_evaluations)
            lambda_s += work.evaluator_s + counted * work.seconds_per_evaluation / speed
            lambda_s += -(-counted // work.shard_size) * lam.invocation_overhead_s
        shard_s = work.shard_size * work.seconds_per_evaluation / speed + lam.invocation_overhead_s
        wall += g * shard_s
        speedup = speed
        compute_usd = 0.0
    else:
        inst = table.instance(placement)
        route = inst.service
        speedup = table.gpu_speedup.value if gpu_speedup is None else gpu_speedup
        if speedup <= 0:
            raise ValidationFailedError("gpu_speedup", f"{speedup} is not positive")
        jobs = shape.segment_jobs + shape.generation_jobs * g
        run_s = jobs * inst.startup_s + evaluation_s / speedup
        if work.measured_s is not None:
            run_s = work.measured_s
        # Spot: each interruption re-starts the job and loses half a generation (a checkpoint
        # follows every generation).
        per_generation_s = evaluation_s / speedup / g if g else 0.0
        interruptions = inst.interruptions_per_hour * run_s / 3600
        rework_s = interruptions * (inst.startup_s + per_generation_s / 2)
        usd_s = inst.usd_per_hour / 3600
        compute_usd = run_s * usd_s
        rework_usd = rework_s * usd_s
        wall += run_s + rework_s
        wru, rru, gets, puts = g * WRU_PER_GENERATION, g * RRU_PER_GENERATION, jobs, g
    compute_usd += lambda_s * gb * usd_gb_s
    requests_usd = requests * lam.usd_per_request
    transitions_usd = transitions * sfn.usd_per_standard_transition
    transitions_usd += shape.express_per_item * items * sfn.usd_per_express_request
    dynamodb_usd = (
        wru * table.dynamodb.usd_per_write_request_unit
        + rru * table.dynamodb.usd_per_read_request_unit
    )
    s3_usd = puts * table.s3.usd_per_put + gets * table.s3.usd_per_get
    usd = compute_usd + rework_usd + requests_usd + transitions_usd + dynamodb_usd + s3_usd
    return Cost(
        placement=placement,
        route=route,
        seconds=wall,
        usd=usd,
        compute_usd=compute_usd,
        requests_usd=requests_usd,
        transitions=transitions,
        transitions_usd=transitions_usd,
        dynamodb_usd=dynamodb_usd,
        s3_usd=s3_usd,
        jobs=jobs,
        rework_usd=rework_usd,
        speedup=speedup,
    )


# -- a predictor-training job ------------------------------------------------------------------
class TrainingWork(_Data):
    """A predictor-training execution's work: the exported rows and the epochs (the estimate),
    or, once the job ended, the billable seconds SageMaker measured (the actual)."""

    rows: int = Field(ge=0, le=100_000_000)
    epochs: int = Field(ge=1, le=100_000)
    seconds_per_row_epoch: float = Field(gt=0, le=60)
    max_runtime_s: float = Field(gt=0, le=28 * 86_400, description="StoppingCondition's cap")
    billable_s: float | None = Field(
        default=None, ge=0, description="DescribeTrainingJob's BillableTimeInSeconds"
    )


# What one predictor-training execution writes besides the job, read off its Lambdas: the
# ledger's reservation (2 items) and settlement (3 items), transactional (2 WRU an item), and
# four decisions (export, reservation, commit, install or failure): 14 write units. S3: the
# exported history, model.tar.gz and the installed model (PUTs), the channel's LIST (priced as
# a PUT), the job's and InstallPredictor's GETs. The export's reads of the history (a
# generation item per told generation) are not priced: unknown until exported, and a few
# hundred read units cost well under $0.0001.
TRAINING_WRU = 14
TRAINING_S3_PUTS, TRAINING_S3_GETS = 4, 2


def training_cost(
    table: PriceTable,
    placement: str,
    work: TrainingWork,
    shape: FlowShape,
    *,
    memory_mb: int = 1769,
    architecture: str = "x86_64",
) -> Cost:
    """A SageMaker training job of `work` on `placement` (a managed-spot price of the table),
    with the state machine doing `shape` once (its transitions and Lambda tasks).

    Estimate: the table's start-up (billed as if all of it were: SageMaker bills from
    TrainingStartTime, after the instance is provisioned) plus rows x epochs x
    `seconds_per_row_epoch`, plus the expected re-work of spot interruptions (the trainer
    starts again from the beginning: a start-up and, on average, half the training), all
    capped at MaxRuntimeInSeconds (a job is stopped there). Actual: the measured billable
    seconds, which already hold any re-work."""
    inst = table.instance(placement)
    if inst.service != "sagemaker":
        raise ValidationFailedError("placement", f"{placement!r} is not a SageMaker price")
    lam, sfn = table.lambda_, table.step_functions
    lambda_speed(table, memory_mb, architecture)  # validates both
    usd_gb_s = lam.usd_per_gb_second[architecture]  # type: ignore[index]
    usd_s = inst.usd_per_hour / 3600
    if work.billable_s is None:
        train_s = work.rows * work.epochs * work.seconds_per_row_epoch
        run_s = min(work.max_runtime_s, inst.startup_s + train_s)
        interruptions = inst.interruptions_per_hour * run_s / 3600
        rework_s = min(work.max_runtime_s - run_s, interruptions * (inst.startup_s + train_s / 2))
    else:
        run_s, rework_s = work.billable_s, 0.0
    transitions = shape.per_segment + shape.per_generation
    lambdas = shape.segment_lambdas + shape.generation_lambdas
    lambda_s = lambdas * lam.orchestration_task_s
    compute_usd = run_s * usd_s + lambda_s * memory_mb / 1024 * usd_gb_s
    rework_usd = rework_s * usd_s
    requests_usd = lambdas * lam.usd_per_request
    transitions_usd = transitions * sfn.usd_per_standard_transition
    dynamodb_usd = TRAINING_WRU * table.dynamodb.usd_per_write_request_unit
    s3_usd = TRAINING_S3_PUTS * table.s3.usd_per_put + TRAINING_S3_GETS * table.s3.usd_per_get
    return Cost(
        placement=placement,
        route="sagemaker",
        seconds=transitions * sfn.transition_latency_s + lambda_s + run_s + rework_s,
        usd=compute_usd + rework_usd + requests_usd + transitions_usd + dynamodb_usd + s3_usd,
        compute_usd=compute_usd,
        requests_usd=requests_usd,
        transitions=transitions,
        transitions_usd=transitions_usd,
        dynamodb_usd=dynamodb_usd,
        s3_usd=s3_usd,
        jobs=shape.segment_jobs + shape.generation_jobs,
        rework_usd=rework_usd,
        speedup=1.0,
    )


# -- the decision ------------------------------------------------------------------------------
class Choice(_Data):
    chosen: Cost
    options: tuple[Cost, ...]
    reason: str


def choose(options: Sequence[Cost], deadline_s: float, rest_fastest_s: float = 0.0) -> Choice:
    """The cheapest placement for this segment that still lets the run meet its deadline.

    `deadline_s` is the time left to the run's deadline; `rest_fastest_s` the time the rest of
    the run (after this segment) takes on its fastest placement. Of the options whose time plus
    that rest fits, the cheapest; if none fits, the fastest (the deadline will be missed).
    """
    if not options:
        raise ValidationFailedError("placements", "no placement to choose from")
    fits = [o for o in options if o.seconds + rest_fastest_s <= deadline_s]
    marked = tuple(
        o.model_copy(update={"meets_deadline": o.seconds + rest_fastest_s <= deadline_s})
        for o in options
    )
    if fits:
        best = min(fits, key=lambda o: (o.usd, o.seconds))
        reason = f"cheapest that meets the deadline ({deadline_s:.0f} s left)"
    else:
        best = min(options, key=lambda o: (o.seconds, o.usd))
        reason = f"none meets the deadline ({deadline_s:.0f} s left): the fastest"
    chosen = next(o for o in marked if o.placement == best.placement)
    return Choice(chosen=chosen, options=tuple(sorted(marked, key=lambda o: o.usd)), reason=reason)


def micro_usd(usd: float) -> int:
    """Whole micro-dollars, rounded up (the budget counts integers: no drift in sums)."""
    if not math.isfinite(usd) or usd < 0:
        raise ValidationFailedError("usd", f"{usd} is not a finite amount >= 0")
    return math.ceil(round(usd * 1_000_000, 6))
