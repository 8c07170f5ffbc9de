"""Layer 5: experiments — a canary of a candidate genome against the live incumbent.

The `canary-rollout` state machine drives one experiment: start (the first weight step, with
the alias, in one transaction), then bake and analyze until the analysis says to move to the
next step, to promote, or to roll back. The analysis reads the experiment's arm rollups (kept
at ingestion for every KPI a routed job recorded: never the raw KPIs) and judges:

- the sample ratio of this step against its weights (chi-square; a mismatch means the data
  cannot be trusted: roll back);
- guardrails: the error rate (a sequential non-inferiority test: harmful when the candidate's
  confidence sequence is worse by more than the margin) and latency p95 (the candidate's p95
  over the incumbent's by more than the relative margin, once both arms have enough jobs);
- the primary metric (the suite's score), by an always-valid sequential test (mSPRT with its
  confidence sequence): harmful → roll back; at the last step before full traffic, promote
  only when the sequence shows the candidate no worse than the margin (non-inferior);
  `analysis="welch"` makes that last judgement a fixed-horizon Welch test instead, and
  `analysis="sprt"` Wald's SPRT of "worse by the margin" against "worse by margin - mde",
  which rolls back as soon as the data favour the first (the fewest jobs on average when the
  candidate is at either hypothesis: bench/experiment_bench.py).

A step that cannot decide within `max_bakes` bakes rolls back: no change takes traffic until
the statistics show it is no worse. Every task is safe to run twice: each writes once,
conditional on the experiment's revision, and a retry finds its write and answers the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from chimera.domain.errors import ConflictError, NotFoundError, ValidationFailedError
from chimera.domain.events import ExperimentConcluded, GenomePromoted, GenomeRolledBack
from chimera.domain.guardrails import GuardrailReading
from chimera.domain.models import (
    Alias,
    Decision,
    Experiment,
    ExperimentPoint,
    ExperimentStatus,
    Verdict,
)
from chimera.domain.rollups import Rollup
from chimera.domain.statistics import (
    Moments,
    SequentialResult,
    harmful,
    non_inferiority,
    sequential_test,
    sprt,
    srm_test,
    welch_test,
)
from chimera.services.alarm_contracts import AlarmCheck, AlarmResult, AlarmStateChange
from chimera.services.contracts import (
    AbortRequest,
    AnalyzeRequest,
    CanaryStep,
    ConcludeRequest,
    ExperimentOutcome,
    ShiftRequest,
    StartExperimentRequest,
)
from chimera.services.deps import Deps

LAYER = "refinement"


def _decide(deps: Deps, execution_id: str, key: str, summary: str, **detail: object) -> None:
    deps.store.add_decision(
        Decision(
            execution_id=execution_id,
            layer=LAYER,
            summary=summary,
            detail=dict(detail),
            key=f"experiment:{key}",
        )
    )


def _split(exp: Experiment, step: int, revision: int) -> Alias:
    """The alias at `step` of the experiment: the candidate's share, the rest to the incumbent."""
    share = exp.config.steps[step]
    weights = {exp.candidate_version: share}
    if share < 1.0:
        weights[exp.incumbent_version] = 1.0 - share
    return Alias(
        agent_id=exp.agent_id,
        weights=weights,
        revision=revision,
        experiment_id=exp.experiment_id,
        step=step,
    )


def _step_result(exp: Experiment, decision: str = "bake", reason: str = "") -> CanaryStep:
    return CanaryStep(
        experiment_id=exp.experiment_id,
        step=exp.step,
        bake=exp.bakes,
        bake_s=exp.config.bake_s,
        weight=exp.weight,
        decision=decision,  # type: ignore[arg-type]
        reason=reason,
    )


def start_experiment(req: StartExperimentRequest, deps: Deps) -> CanaryStep:
    """The experiment and the alias at its first step, in one transaction (a retry: the same).

    The candidate takes traffic only from the incumbent it was judged against: if the live
    alias has moved since, the experiment does not start (ConflictError, nothing written).
    """
    experiment_id = req.execution_id
    try:  # a retry: started before (its decision recorded below if the first attempt died)
        exp = deps.store.get_experiment(experiment_id)
    except NotFoundError:
        exp = _start(req, deps)
    _decide(
        deps,
        req.execution_id,
        f"{experiment_id}:start",
        f"{req.agent_id}: canary {experiment_id} of v{req.candidate_version} against "
        f"v{req.incumbent_version} at {exp.config.steps[0]:.0%}",
        experiment_id=experiment_id,
    )
    return _step_result(exp)


def _start(req: StartExperimentRequest, deps: Deps) -> Experiment:
    experiment_id = req.execution_id
    alias = deps.store.get_alias(req.agent_id)
    if alias is None or alias.primary_version != req.incumbent_version:
        live = None if alias is None else alias.primary_version
        raise ConflictError(
            f"incumbent_version: the live alias of {req.agent_id} serves v{live}, "
            f"not v{req.incumbent_version}"
        )
    deps.store.get_genome(req.agent_id, req.candidate_version)  # NotFoundError names it
    now = deps.clock.now()
    exp = Experiment(
        experiment_id=experiment_id,
        agent_id=req.agent_id,
        candidate_version=req.candidate_version,
        incumbent_version=req.incumbent_version,
        run_id=req.run_id,
        execution_id=req.execution_id,
        config=req.config,
        alias_revision=alias.revision,
        started_at=now,
        step_started_at=now,
    )
    return deps.store.start_experiment(exp, _split(exp, 0, alias.revision + 1))


# -- analysis ------------------------------------------------------------------------------
def _arms(
    rollups: list[Rollup], exp: Experiment
) -> tuple[Rollup | None, Rollup | None, Rollup | None, Rollup | None]:
    """(incumbent, candidate) over the whole experiment, then over the current step."""

    def merged(version: int, step: int | None) -> Rollup | None:
        out: Rollup | None = None
        for r in rollups:
            if r.genome_version == version and (step is None or r.step == step):
                out = r if out is None else out.merge(r)
        return out

    return (
        merged(exp.incumbent_version, None),
        merged(exp.candidate_version, None),
        merged(exp.incumbent_version, exp.step),
        merged(exp.candidate_version, exp.step),
    )


def _score(r: Rollup | None) -> Moments:
    return r.score if r is not None else Moments()


def _errors(r: Rollup | None) -> Moments:
    """The error indicator's moments (1 per failed job): for the error-rate guardrail."""
    if r is None or r.count == 0:
        return Moments()
    p = r.failures / r.count
    return Moments(n=r.count, mean=p, m2=r.count * p * (1.0 - p))


def _count(r: Rollup | None) -> int:
    return r.count if r is not None else 0


def _p95(r: Rollup | None) -> float | None:
    return r.latency_quantile(0.95) if r is not None and r.count else None


def _primary(exp: Experiment, control: Moments, treatment: Moments) -> SequentialResult:
    cfg = exp.config
    if control.n >= 2 and treatment.n >= 2 and control.m2 == 0.0 and treatment.m2 == 0.0:
        # Both arms constant (a deterministic suite): the difference is known exactly.
        d = treatment.mean - control.mean
        return SequentialResult(d, d, d, 0.0 if d != 0 else 1.0, control.n, treatment.n)
    return sequential_test(
        control, treatment, alpha=cfg.alpha, kind=cfg.metric, previous_p=exp.p_value
    )


def _judge(exp: Experiment, rollups: list[Rollup]) -> tuple[str, str, dict[str, Any]]:
    """(decision, reason, statistics) for the experiment now."""
    cfg = exp.config
    inc, cand, inc_step, cand_step = _arms(rollups, exp)
    stats: dict[str, Any] = {"n_control": _count(inc), "n_treatment": _count(cand)}
    primary = _primary(exp, _score(inc), _score(cand))
    stats["primary"] = primary.to_json()

    share = exp.weight
    observed = [_count(inc_step), _count(cand_step)]
    if sum(observed) > 0 and share < 1.0:
        srm = srm_test(observed, [1.0 - share, share], threshold=cfg.srm_threshold)
        stats["srm"] = srm.to_json()
        if srm.mismatch and min(observed) >= 1:
            return "rollback", f"sample ratio mismatch in step {exp.step}: {observed}", stats

    reading, errors, p95 = _guardrails(exp, inc, cand)
    stats["error_rate"] = [_errors(inc).mean, _errors(cand).mean]
    stats["error_guardrail"] = errors.to_json()
    stats["latency_p95"] = list(p95)
    if reading.breach is not None:
        return "rollback", reading.breach, stats

    if harmful(primary, margin=cfg.margin, higher_is_better=cfg.higher_is_better):
        return (
            "rollback",
            (
                f"candidate worse: difference {primary.difference:.4g} "
                f"(confidence sequence {_interval(primary)})"
            ),
            stats,
        )

    enough = min(observed) >= cfg.min_samples if share < 1.0 else True
    last = exp.step + 1 >= len(cfg.steps) - 1  # the next step gives it all traffic
    if enough and not last:
        return "next", f"no harm at {share:.0%} with {observed[1]} candidate jobs", stats
    if enough and last:
        verdict = _non_inferior(exp, primary, _score(inc), _score(cand), stats)
        if verdict is not None:
            return verdict
    if exp.bakes + 1 >= cfg.max_bakes:
        return (
            "rollback",
            (
                f"inconclusive after {cfg.max_bakes} bakes at {share:.0%} "
                f"(difference {primary.difference:.4g}, {_interval(primary)}; "
                f"{observed[1]} candidate jobs in this step)"
            ),
            stats,
        )
    return "bake", f"{observed[1]} candidate jobs at {share:.0%}: not yet decided", stats


def _non_inferior(
    exp: Experiment,
    primary: SequentialResult,
    control: Moments,
    treatment: Moments,
    stats: dict[str, Any],
) -> tuple[str, str, dict[str, Any]] | None:
    """Promote when the candidate is shown no worse than the margin; None: not yet shown."""
    cfg = exp.config
    if cfg.analysis == "sprt":
        null, alternative = cfg.sprt_hypotheses()
        wald = sprt(
            control, treatment, alpha=cfg.alpha, power=cfg.power, kind=cfg.metric,
            null=null, alternative=alternative,
        )  # fmt: skip
        stats["sprt"] = {**wald.to_json(), "null": null, "alternative": alternative}
        if wald.decision == "reject":
            return (
                "promote",
                (
                    f"SPRT: difference {alternative:.4g} over {null:.4g} (observed "
                    f"{wald.difference:.4g}, p {wald.p_value:.3g}): no worse than the margin"
                ),
                stats,
            )
        if wald.decision == "accept":
            return (
                "rollback",
                (
                    f"SPRT: difference {null:.4g} over {alternative:.4g} (observed "
                    f"{wald.difference:.4g}): the planned effect is not there"
                ),
                stats,
            )
        return None
    if cfg.analysis == "welch" and control.n >= 2 and treatment.n >= 2:
        try:
            fixed = welch_test(control, treatment, alpha=2 * cfg.alpha)  # one-sided bound
        except ValidationFailedError:
            fixed = None
        if fixed is not None:
            stats["welch"] = {
                "difference": fixed.difference,
                "p_value": fixed.p_value,
                "lower": fixed.lower,
                "upper": fixed.upper,
            }
            bound = fixed.lower if cfg.higher_is_better else -fixed.upper
            if bound > -cfg.margin:
                return "promote", f"Welch: no worse than the margin ({bound:.4g})", stats
            return "rollback", f"Welch: not shown no worse ({bound:.4g})", stats
    bound = primary.lower if cfg.higher_is_better else -primary.upper
    if bound > -cfg.margin:
        return (
            "promote",
            (
                f"no worse: difference {primary.difference:.4g}, confidence sequence "
                f"{_interval(primary)} (margin {cfg.margin:g})"
            ),
            stats,
        )
    return None


def _interval(r: SequentialResult) -> str:
    def f(x: float) -> str:
        return "-inf" if x == -math.inf else "inf" if x == math.inf else f"{x:.4g}"

    return f"[{f(r.lower)}, {f(r.upper)}]"


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def analyze(req: AnalyzeRequest, deps: Deps) -> CanaryStep:
    """One bake's analysis, written once as a point of the statistic over time."""
    exp = deps.store.get_experiment(req.experiment_id)
    if exp.status != ExperimentStatus.RUNNING:
        return _step_result(exp, "stopped", exp.reason or exp.status.value)
    if (exp.step, exp.bakes) == (req.step, req.bake + 1):  # a retry: this bake was analysed
        point = deps.store.list_experiment_points(exp.experiment_id)[-1]
        return _step_result(exp, point.decision, str(exp.statistics.get("reason", "")))
    if (exp.step, exp.bakes) != (req.step, req.bake):
        raise ConflictError(
            f"step: experiment {exp.experiment_id} is at step {exp.step} bake {exp.bakes}, "
            f"not step {req.step} bake {req.bake}"
        )
    decision, reason, stats = _judge(exp, deps.store.experiment_rollups(exp.experiment_id))
    primary = SequentialResult.from_json(stats["primary"])
    error_p = SequentialResult.from_json(stats["error_guardrail"]).p_value
    stats["reason"] = reason
    stats["decision"] = decision
    now = deps.clock.now()
    points = deps.store.list_experiment_points(exp.experiment_id)
    p95 = stats.get("latency_p95", [None, None])
    er = stats.get("error_rate", [None, None])
    point = ExperimentPoint(
        experiment_id=exp.experiment_id,
        seq=len(points),
        at=now,
        step=exp.step,
        weight=exp.weight,
        n_control=primary.n_control,
        n_treatment=primary.n_treatment,
        difference=_finite_or_none(primary.difference),
        lower=_finite_or_none(primary.lower),
        upper=_finite_or_none(primary.upper),
        p_value=primary.p_value,
        srm_p=stats.get("srm", {}).get("p_value"),
        error_rate=(er[0], er[1]),
        latency_p95=(p95[0], p95[1]),
        decision=decision,
    )
    try:
        exp = deps.store.save_experiment(
            exp.model_copy(
                update={
                    "bakes": exp.bakes + 1,
                    "p_value": primary.p_value,
                    "guardrail_p": error_p,
                    "statistics": _json_safe(stats),
                }
            ),
            point=point,
        )
    except ConflictError:
        return _stopped_meanwhile(deps, exp.experiment_id)
    _decide(
        deps,
        req.execution_id,
        f"{exp.experiment_id}:analyze:{req.step}:{req.bake}",
        f"{exp.agent_id}: canary step {req.step} bake {req.bake}: {decision} ({reason})",
        experiment_id=exp.experiment_id,
    )
    return _step_result(exp, decision, reason)


def _json_safe(value: Any) -> Any:
    """Statistics as JSON: an infinite bound (nothing known yet) is written as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _stopped_meanwhile(deps: Deps, experiment_id: str) -> CanaryStep:
    """After a write lost its race: stopped meanwhile (an alarm, an operator), the execution
    ends as for a stop found before the write; anything else that moved the experiment is a
    conflict for the state machine's Catch (re-raised)."""
    current = deps.store.get_experiment(experiment_id)
    if current.status == ExperimentStatus.RUNNING:
        raise ConflictError(f"experiment_id: {experiment_id} moved while being written")
    return _step_result(current, "stopped", current.reason or current.status.value)


def shift(req: ShiftRequest, deps: Deps) -> CanaryStep:
    """The alias to the step after `req.step` (a retry finds it moved and answers the same)."""
    exp = deps.store.get_experiment(req.experiment_id)
    if exp.status != ExperimentStatus.RUNNING:
        return _step_result(exp, "stopped", exp.reason or exp.status.value)
    if exp.step == req.step + 1:
        return _step_result(exp)
    if exp.step != req.step:
        raise ConflictError(f"step: experiment {exp.experiment_id} is at step {exp.step}")
    nxt = exp.model_copy(
        update={"step": exp.step + 1, "bakes": 0, "step_started_at": deps.clock.now()}
    )
    try:
        exp = deps.store.save_experiment(nxt, alias=_split(nxt, nxt.step, exp.alias_revision + 1))
    except ConflictError:
        return _stopped_meanwhile(deps, exp.experiment_id)
    _decide(
        deps,
        req.execution_id,
        f"{exp.experiment_id}:shift:{exp.step}",
        f"{exp.agent_id}: canary {exp.experiment_id} now at {exp.weight:.0%}",
        experiment_id=exp.experiment_id,
    )
    return _step_result(exp)


def _close(
    deps: Deps,
    exp: Experiment,
    verdict: Verdict,
    reason: str,
    status: ExperimentStatus = ExperimentStatus.CONCLUDED,
) -> Experiment:
    """Conclude: the alias to the winner, the verdict and its events, in one transaction."""
    winner = exp.candidate_version if verdict == Verdict.PROMOTED else exp.incumbent_version
    loser = exp.incumbent_version if verdict == Verdict.PROMOTED else exp.candidate_version
    alias = Alias(agent_id=exp.agent_id, weights={winner: 1.0}, revision=exp.alias_revision + 1)
    concluded = ExperimentConcluded(
        experiment_id=exp.experiment_id,
        agent_id=exp.agent_id,
        verdict=verdict.value,
        candidate_version=exp.candidate_version,
        incumbent_version=exp.incumbent_version,
        reason=reason[:1000],
        statistics=_json_safe(
            {k: v for k, v in exp.statistics.items() if k in ("primary", "srm", "n_control")}
            | {"p_value": exp.p_value, "n_treatment": exp.statistics.get("n_treatment")}
        ),
    )
    moved: GenomePromoted | GenomeRolledBack
    if verdict == Verdict.PROMOTED:
        moved = GenomePromoted(
            agent_id=exp.agent_id,
            version=winner,
            previous_version=loser,
            run_id=exp.run_id or exp.experiment_id,
        )
    else:
        moved = GenomeRolledBack(
            agent_id=exp.agent_id,
            from_version=loser,
            to_version=winner,
            reason=reason[:1000],
            experiment_id=exp.experiment_id,
        )
    done = exp.model_copy(
        update={
            "status": status,
            "verdict": verdict,
            "reason": reason[:4000],
            "concluded_at": deps.clock.now(),
        }
    )
    return deps.store.save_experiment(done, alias=alias, events=[moved, concluded])


def conclude(req: ConcludeRequest, deps: Deps) -> ExperimentOutcome:
    exp = deps.store.get_experiment(req.experiment_id)
    if exp.status == ExperimentStatus.RUNNING:
        exp = _close(deps, exp, Verdict(req.verdict), req.reason or req.verdict)
    return _outcome(deps, req.execution_id, exp)


def _outcome(deps: Deps, execution_id: str, exp: Experiment) -> ExperimentOutcome:
    verdict = exp.verdict.value if exp.verdict is not None else None
    _decide(
        deps,
        execution_id,
        f"{exp.experiment_id}:concluded",
        f"{exp.agent_id}: canary {exp.experiment_id} {exp.status.value}: {verdict} "
        f"v{exp.candidate_version} ({exp.reason})",
        experiment_id=exp.experiment_id,
        verdict=verdict,
    )
    return ExperimentOutcome(
        experiment_id=exp.experiment_id,
        status=exp.status.value,
        verdict=verdict,
        reason=exp.reason or "",
    )


def stop(deps: Deps, experiment_id: str, reason: str, execution_id: str) -> Experiment:
    """Stop a running experiment and roll its candidate back (an operator, an alarm, a failed
    step). A concluded one is left as it is. The alias write is conditional: a concurrent step
    that moved it makes this re-read and try again."""
    for _ in range(5):
        exp = deps.store.get_experiment(experiment_id)
        if exp.status != ExperimentStatus.RUNNING:
            return exp
        try:
            exp = _close(deps, exp, Verdict.ROLLED_BACK, reason, ExperimentStatus.STOPPED)
        except ConflictError:
            continue
        _outcome(deps, execution_id, exp)
        return exp
    raise ConflictError(f"experiment_id: {experiment_id} kept changing while being stopped")


def abort(req: AbortRequest, deps: Deps) -> ExperimentOutcome:
    error = str(req.error.get("Error", "error"))
    cause = str(req.error.get("Cause", ""))[:500]
    exp = stop(deps, req.experiment_id, f"aborted: {error}: {cause}", req.execution_id)
    return _outcome(deps, req.execution_id, exp)


# -- guardrails between analyses: the metrics CloudWatch alarms on, and the alarm's check ----
def _guardrails(
    exp: Experiment, inc: Rollup | None, cand: Rollup | None
) -> tuple[GuardrailReading, SequentialResult, tuple[float | None, float | None]]:
    """The guardrails over both arms of the whole experiment — the error rate by sequential
    non-inferiority, latency p95 by its relative margin once both arms have `min_samples`
    jobs — their values, and the first breached (what the analysis and the alarm both read)."""
    cfg, guard = exp.config, exp.config.guardrails
    n = (_count(inc), _count(cand))
    errors = non_inferiority(
        _errors(inc),
        _errors(cand),
        margin=guard.error_rate_margin,
        alpha=cfg.alpha,
        kind="proportion",
        higher_is_better=False,
        previous_p=exp.guardrail_p,
    )
    breach = None
    if harmful(errors, margin=guard.error_rate_margin, higher_is_better=False):
        breach = (
            f"guardrail: error rate {_errors(cand).mean:.3f} against "
            f"{_errors(inc).mean:.3f}, worse by more than {guard.error_rate_margin}"
        )
    p95 = (_p95(inc), _p95(cand))
    ratio = None
    if p95[0] is not None and p95[1] is not None and min(n) >= guard.min_samples:
        ratio = p95[1] / p95[0] if p95[0] > 0 else None
        if breach is None and p95[1] > p95[0] * (1.0 + guard.latency_p95_margin) + 1e-9:
            breach = (
                f"guardrail: latency p95 {p95[1]:.1f} ms against {p95[0]:.1f} ms, over "
                f"{1 + guard.latency_p95_margin:.2f}x"
            )
    both = min(n) > 0
    reading = GuardrailReading(
        experiment_id=exp.experiment_id,
        agent_id=exp.agent_id,
        n_control=n[0],
        n_treatment=n[1],
        error_rate_excess=_errors(cand).mean - _errors(inc).mean if both else None,
        error_rate_excess_bound=_finite_or_none(errors.lower) if both else None,
        latency_ratio=ratio,
        breach=breach,
    )
    return reading, errors, p95


def _guardrail_reading(exp: Experiment, rollups: list[Rollup]) -> GuardrailReading:
    inc, cand, _, _ = _arms(rollups, exp)
    return _guardrails(exp, inc, cand)[0]


def guardrail_readings(deps: Deps, experiment_ids: Iterable[str]) -> list[GuardrailReading]:
    """The guardrails of each running experiment among `experiment_ids` (those a KPI batch
    touched), from its arm rollups, never the raw KPIs: what the refinement function publishes
    as CloudWatch metrics (`chimera.domain.guardrails`). A concluded or unknown one is skipped."""
    readings = []
    for experiment_id in sorted(set(experiment_ids)):
        try:
            exp = deps.store.get_experiment(experiment_id)
        except NotFoundError:
            continue  # a KPI naming an experiment this deployment does not hold
        if exp.status == ExperimentStatus.RUNNING:
            rollups = deps.store.experiment_rollups(experiment_id)
            readings.append(_guardrail_reading(exp, rollups))
    return readings


def stop_for_alarm(deps: Deps, alarm: str, state_reason: str, event_id: str) -> list[AlarmCheck]:
    """A CloudWatch guardrail alarm went into ALARM: re-check every running experiment's
    guardrails from its rollups and roll back (`stop`: the alias to the incumbent,
    GenomeRolledBack and ExperimentConcluded through the outbox) each one the analysis would
    call breached, with a reason naming the alarm.

    The alarm only triggers the check: it watches the largest value over all experiments with
    the deployment's margins, while each experiment is judged by its own, so one within its
    guardrails stays running. What was checked is recorded once, as a decision keyed by the
    event's id (under `alarm:<name>`); each stop is recorded in the canary's own decisions.
    Delivered twice, the second finds the stopped experiment no longer running: nothing is
    rolled back or announced twice."""
    checks = [
        (exp, _guardrail_reading(exp, deps.store.experiment_rollups(exp.experiment_id)))
        for exp in deps.store.list_experiments(status=ExperimentStatus.RUNNING)
    ]
    breached = [exp.experiment_id for exp, reading in checks if reading.breach is not None]
    _decide(
        deps,
        f"alarm:{alarm}",
        f"alarm:{event_id}",
        f"alarm {alarm}: {len(checks)} running experiment(s) checked, "
        f"{len(breached)} breaching their guardrails"
        + (f" (rolling back {', '.join(breached)})" if breached else ""),
        alarm=alarm,
        state_reason=state_reason[:1000],
        checked=[r.model_dump(mode="json") for _, r in checks[:100]],
    )
    results = []
    for exp, reading in checks:
        if reading.breach is None:
            results.append(
                AlarmCheck(
                    experiment_id=exp.experiment_id,
                    agent_id=exp.agent_id,
                    action="left running",
                    reason="within its guardrails",
                    metrics=reading.metrics(),
                )
            )
            continue
        done = stop(
            deps,
            exp.experiment_id,
            f"alarm {alarm}: {reading.breach}",
            exp.execution_id or exp.experiment_id,
        )
        results.append(
            AlarmCheck(
                experiment_id=exp.experiment_id,
                agent_id=exp.agent_id,
                action="stopped" if done.status == ExperimentStatus.STOPPED else "concluded",
                reason=done.reason or "",
                metrics=reading.metrics(),
            )
        )
    return results


def on_alarm(change: AlarmStateChange, deps: Deps) -> AlarmResult:
    """A guardrail alarm's state change (EventBridge): into ALARM, the rollback path
    (`stop_for_alarm`); back to OK or INSUFFICIENT_DATA, nothing to do."""
    detail = change.detail
    checked = []
    if detail.state.value == "ALARM":
        checked = stop_for_alarm(deps, detail.alarm_name, detail.state.reason, change.id)
    return AlarmResult(alarm=detail.alarm_name, state=detail.state.value, checked=checked)


def rollback(
    deps: Deps, agent_id: str, to_version: int | None, reason: str, execution_id: str
) -> tuple[int, int, Experiment | None]:
    """An operator's rollback: stop a running canary (its candidate out), then point the alias
    at `to_version` (default: the version the live one evolved from). Returns (from, to,
    the stopped experiment)."""
    stopped = None
    running = deps.store.running_experiment(agent_id)
    if running is not None:
        stopped = stop(deps, running.experiment_id, f"rolled back: {reason}", execution_id)
    alias = deps.store.get_alias(agent_id)
    if alias is None:
        raise NotFoundError("live alias of agent", agent_id, field="agent_id")
    current = alias.primary_version
    if to_version is None:
        if stopped is not None:
            return stopped.candidate_version, current, stopped
        parent = deps.store.get_genome(agent_id, current).parent_version
        if parent is None:
            raise ValidationFailedError(
                "to_version", f"v{current} of {agent_id} has no earlier version to roll back to"
            )
        to_version = parent
    deps.store.get_genome(agent_id, to_version)  # NotFoundError names it
    if alias.weights == {to_version: 1.0}:
        return current, to_version, stopped
    event = GenomeRolledBack(
        agent_id=agent_id, from_version=current, to_version=to_version, reason=reason[:1000]
    )
    deps.store.set_alias(
        Alias(agent_id=agent_id, weights={to_version: 1.0}, revision=alias.revision + 1),
        events=[event],
    )
    _decide(
        deps,
        execution_id,
        f"rollback:{agent_id}:{alias.revision + 1}",
        f"{agent_id}: rolled back from v{current} to v{to_version} ({reason})",
        to_version=to_version,
    )
    return current, to_version, stopped
