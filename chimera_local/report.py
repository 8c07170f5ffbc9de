"""The run report a person reads: text for the terminal, an HTML page with the fitness plot."""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from typing import Any

from chimera.domain.budget import BudgetState
from chimera.domain.models import (
    Decision,
    EvolutionRun,
    Experiment,
    ExperimentPoint,
    FitnessPoint,
    KpiRecord,
    Verdict,
)
from chimera.domain.patterns import Detection, Detectors
from chimera.domain.rollups import Rollup
from chimera.domain.suites import get_suite
from chimera.ports import Store
from chimera.services.costs import CostEntryView, CostTotals, entry_view, totals


@dataclass
class ExperimentView:
    """A run's canary: its analyses over time and the agent's live KPI windows around it."""

    experiment: Experiment
    points: list[ExperimentPoint]
    windows: list[Rollup]  # the agent's time windows (every version together), oldest first
    changes: list[Detection]  # what the detectors find in the windows' mean score

    def line(self) -> str:
        e = self.experiment
        shares = " -> ".join(f"{w:.0%}" for w in sorted({p.weight for p in self.points}))
        head = f"canary {e.experiment_id}: v{e.candidate_version} vs v{e.incumbent_version}"
        if e.verdict is None:
            return f"{head}: {e.status.value} at {e.weight:.0%} ({len(self.points)} analyses)"
        return f"{head}: {e.verdict.value} after {len(self.points)} analyses ({shares}): {e.reason}"


def _windows(store: Store, agent_id: str) -> tuple[list[Rollup], list[Detection]]:
    """The agent's windows merged across versions, and the detectors' findings on them."""
    by_start: dict[Any, Rollup] = {}
    for r in store.list_rollups(agent_id):
        by_start[r.window_start] = (
            by_start[r.window_start].merge(r) if r.window_start in by_start else r
        )
    windows = [by_start[k] for k in sorted(by_start)]
    scored = [w.score_mean for w in windows if w.score_n > 0]
    return windows, Detectors().scan(scored) if scored else []


@dataclass
class RunView:
    run: EvolutionRun
    history: list[FitnessPoint]
    holdout: list[KpiRecord]
    live_version: int | None
    canary: ExperimentView | None = None


@dataclass(frozen=True)
class Rejection:
    """A bundle this cycle did not take: at discovery (manifest, module file, a claimed id) or
    at validation (its module version failed layer 3; the live version, if any, serves on)."""

    bundle: str
    reason: str
    agent_id: str | None = None
    version: int | None = None
    live_version: int | None = None

    def line(self) -> str:
        what = f"bundle {self.bundle!r}"
        if self.agent_id is not None:
            what += f" (agent {self.agent_id}, module v{self.version})"
        if self.agent_id is None:
            after = "not registered"
        elif self.live_version is None:
            after = "no live module: the agent is invalid"
        else:
            after = f"live module v{self.live_version} keeps serving"
        return f"{what} rejected: {self.reason} [{after}]"


@dataclass
class Report:
    execution_id: str
    status: str
    seconds: float
    decisions: list[Decision]
    runs: list[RunView]
    items: list[dict[str, Any]]
    rejections: list[Rejection] = field(default_factory=list)
    costs: list[CostEntryView] = field(default_factory=list)  # the runs' segments (layer 8)
    budget: BudgetState | None = None  # the period's, when the report was made

    @property
    def cost_totals(self) -> CostTotals:
        return totals(self.costs)


def rejections(decisions: list[Decision]) -> list[Rejection]:
    """The bundles a cycle rejected, from what discovery and validation decided."""
    out: list[Rejection] = []
    for d in decisions:
        if d.layer == "discovery":
            for r in d.detail.get("rejected") or []:
                out.append(Rejection(bundle=str(r["bundle"]), reason=str(r["error"])))
        elif d.layer == "validation" and isinstance(d.detail.get("rejected"), dict):
            r = d.detail["rejected"]
            out.append(
                Rejection(
                    bundle=str(r["bundle"]),
                    reason="; ".join(r["problems"]),
                    agent_id=d.detail.get("agent_id"),
                    version=r.get("version"),
                    live_version=d.detail.get("live_version"),
                )
            )
    return out


def collect(
    store: Store,
    execution_id: str,
    status: str,
    seconds: float,
    items: list[dict[str, Any]],
    budget: tuple[str, float] | None = None,
) -> Report:
    """The cycle's report; `budget`: (period, budget in USD) to show that period's budget."""
    runs = []
    ledger: list[CostEntryView] = []
    for run in store.list_runs():
        if run.execution_id != execution_id:
            continue
        holdout = [
            k for k in store.list_kpis(run.agent_id) if k.job_id.startswith(f"{run.run_id}:")
        ]
        alias = store.get_alias(run.agent_id)
        canary = None
        for exp in store.list_experiments(run.agent_id):
            if exp.run_id == run.run_id:
                windows, changes = _windows(store, run.agent_id)
                points = store.list_experiment_points(exp.experiment_id)
                canary = ExperimentView(exp, points, windows, changes)
        ledger += [entry_view(e) for e in store.list_ledger(run_id=run.run_id)]
        runs.append(
            RunView(
                run,
                store.fitness_history(run.run_id),
                holdout,
                alias.primary_version if alias else None,
                canary,
            )
        )
    decisions = store.list_decisions(execution_id)
    state = store.budget_state(*budget) if budget is not None else None
    return Report(
        execution_id, status, seconds, decisions, runs, items, rejections(decisions), ledger, state
    )


def _usd(x: float | None) -> str:
    return "-" if x is None else f"${x:.6f}"


def _budget_line(b: BudgetState) -> str:
    used = f" ({b.spent_usd / b.budget_usd:.1%})" if b.budget_usd > 0 else ""
    fired = ", ".join(f"{t:.0%}" for t in sorted(b.thresholds_fired)) or "none"
    return (
        f"budget {b.period}: {_usd(b.budget_usd)}, spent {_usd(b.spent_usd)}{used}, reserved "
        f"{_usd(max(0.0, b.held_usd - b.spent_usd))}, available {_usd(b.left_usd)}; "
        f"thresholds fired: {fired}"
    )


def cost_lines(report: Report) -> list[str]:
    """Layer 8's part: each segment's placement, estimated against actual, and the budget."""
    lines = ["", "  Cost (layer 8: estimated against actual):"]
    for c in report.costs:
        diff = "" if c.difference_usd is None else f" ({c.difference_usd:+.6f})"
        lines.append(
            f"    {c.run_id} generations {c.first_generation}-{c.last_generation} on "
            f"{c.placement}: est. {_usd(c.estimated_usd)}, actual {_usd(c.actual_usd)}{diff}"
            + ("" if c.status == "committed" else f", open ({_usd(c.reserved_usd)} held)")
        )
    if not report.costs:
        lines.append("    no segment was placed")
    t = report.cost_totals
    ratio = (
        "" if t.actual_over_estimated is None else f", actual/est. {t.actual_over_estimated:.3f}"
    )
    lines.append(
        f"    total: est. {_usd(t.committed_estimated_usd)}, actual {_usd(t.actual_usd)} over "
        f"{t.committed} committed segment(s){ratio}; {t.open} open"
    )
    if report.budget is not None:
        lines.append(f"    {_budget_line(report.budget)}")
    return lines


def _score(view: RunView, version: int | None) -> str:
    for k in view.holdout:
        if k.genome_version == version:
            return f"{k.score:.4g}" if k.success and k.score is not None else f"failed ({k.reason})"
    return "-"


def text(report: Report) -> str:
    lines = [
        f"Optimization cycle {report.execution_id}: {report.status} in {report.seconds:.1f} s",
        "",
    ]
    for v in report.runs:
        r = v.run
        suite = get_suite(r.suite)
        lines += [
            f"  {r.agent_id}  ({r.suite}, {r.strategy.value}, population {r.population_size})",
            f"    generations {r.generation}, best training fitness {r.best_fitness:.4g}"
            if r.best_fitness is not None
            else f"    generations {r.generation}",
            f"    hold-out {suite.score_name}: candidate v{r.champion_version} {_score(v, r.champion_version)}"
            f", incumbent v{r.incumbent_version} {_score(v, r.incumbent_version)}",
            f"    decision: {r.decision}   live now: v{v.live_version}",
        ]
        if v.canary is not None:
            lines.append(f"    {v.canary.line()}")
    failed = [i for i in report.items if i.get("status") not in ("evolved",)]
    for item in failed:
        lines.append(
            f"  {item.get('agent_id')}: {item.get('status')} {item.get('problems') or item.get('error') or ''}"
        )
    for item in report.items:  # another execution drives this agent's run: left alone
        outcome = item.get("outcome") or {}
        if outcome.get("status") == "skipped":
            lines.append(f"  {item.get('agent_id')}: {outcome.get('decision')}")
    lines += cost_lines(report)
    if report.rejections:
        lines += ["", "  Rejected bundles:"]
        lines += [f"    {r.line()}" for r in report.rejections]
    lines += ["", "  Layers:"]
    lines += [f"    [{d.layer}] {d.summary}" for d in report.decisions]
    return "\n".join(lines)


def _plot_svg(report: Report) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = [v for v in report.runs if v.history]
    if not views:
        return "<p>No generations were evaluated.</p>"
    fig, axes = plt.subplots(1, len(views), figsize=(6 * len(views), 3.6), squeeze=False)
    for ax, v in zip(axes[0], views, strict=True):
        gens = [p.generation for p in v.history]
        ax.plot(gens, [p.best for p in v.history], label="best", color="#1f6feb")
        ax.plot(gens, [p.mean for p in v.history], label="mean", color="#8b949e")
        ax.set_title(f"{v.run.agent_id} ({v.run.strategy.value})")
        ax.set_xlabel("generation")
        ax.set_ylabel("fitness")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    return _svg(fig)


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


def _canary_svg(view: ExperimentView) -> str:
    """The canary's three panels: the confidence sequence of the primary metric's difference
    at each analysis, the candidate's traffic share over (simulated) time, and the agent's
    KPI per time window with the change points its detectors find."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e, points = view.experiment, view.points
    fig, (cs, split, trend) = plt.subplots(1, 3, figsize=(16, 3.6))
    shown = [p for p in points if p.difference is not None]
    if shown:
        x = [p.seq for p in shown]
        cs.plot(x, [p.difference for p in shown], "o-", color="#1f6feb", label="difference")
        low = [p.lower if p.lower is not None else p.difference for p in shown]
        high = [p.upper if p.upper is not None else p.difference for p in shown]
        cs.fill_between(x, low, high, color="#1f6feb", alpha=0.2, label="confidence sequence")
    cs.axhline(0.0, color="#8b949e", linewidth=1)
    margin = e.config.margin if e.config.higher_is_better else -e.config.margin
    cs.axhline(-margin, color="#cf222e", linestyle="--", linewidth=1, label="margin")
    cs.set_title(f"{e.experiment_id}: {e.verdict.value if e.verdict else e.status.value}")
    cs.set_xlabel("analysis")
    cs.set_ylabel("candidate - incumbent")
    cs.legend(loc="best", fontsize=8)
    if points:
        times, shares = [p.at for p in points], [p.weight for p in points]
        if e.concluded_at is not None and e.verdict is not None:  # all traffic to one side
            times.append(e.concluded_at)
            shares.append(1.0 if e.verdict == Verdict.PROMOTED else 0.0)
        split.step(times, shares, where="post", color="#1a7f37")
        split.plot(times, shares, "o", color="#1a7f37")
    split.set_ylim(0, 1.05)
    split.set_title("candidate's traffic share")
    split.set_xlabel("time (simulated locally)")
    split.tick_params(axis="x", labelrotation=30, labelsize=7)
    scored = [w for w in view.windows if w.score_n > 0]
    if scored:
        starts = [w.window_start for w in scored]
        trend.plot(starts, [w.score_mean for w in scored], ".-", color="#8250df", label="mean")
        for d in view.changes:
            if d.kind == "change-point":
                at = starts[d.start if d.start is not None else d.index]
                trend.axvline(at, color="#cf222e", linestyle="--", linewidth=1)
        trend.legend(loc="best", fontsize=8)
    trend.set_title(
        f"KPI per window ({sum(d.kind == 'change-point' for d in view.changes)} change points)"
    )
    trend.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.tight_layout()
    return _svg(fig)


def _canaries_html(report: Report) -> str:
    e = html.escape
    views = [v.canary for v in report.runs if v.canary is not None]
    if not views:
        return "<p>No canary was started in this cycle.</p>"
    return "".join(f"<h3>{e(c.line())}</h3>{_canary_svg(c)}" for c in views)


def _verdict(view: RunView) -> str:
    if view.canary is None:
        return "-"
    e = view.canary.experiment
    return e.verdict.value if e.verdict is not None else e.status.value


def _serving(r: Rejection) -> str:
    if r.agent_id is None:
        return "not registered"
    return "nothing (invalid)" if r.live_version is None else f"live module v{r.live_version}"


def _cost_html(report: Report) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(c.run_id)}</td><td>{c.first_generation}-{c.last_generation}</td>"
        f"<td>{e(c.placement)}</td><td>{e(c.status)}</td><td>{_usd(c.estimated_usd)}</td>"
        f"<td>{_usd(c.actual_usd)}</td><td>{_usd(c.difference_usd)}</td>"
        f"<td>{e(c.reason)}</td></tr>"
        for c in report.costs
    )
    t = report.cost_totals
    total = (
        f"<tr><th colspan=4>committed segments ({t.committed}; {t.open} open)</th>"
        f"<th>{_usd(t.committed_estimated_usd)}</th><th>{_usd(t.actual_usd)}</th>"
        f"<th>{_usd(t.actual_usd - t.committed_estimated_usd)}</th><th></th></tr>"
    )
    budget = f"<p>{e(_budget_line(report.budget))}</p>" if report.budget is not None else ""
    return (
        "<table><tr><th>run</th><th>generations</th><th>placement</th><th>status</th>"
        "<th>estimated</th><th>actual</th><th>actual - estimated</th><th>why</th></tr>"
        f"{rows}{total}</table>{budget}"
    )


def to_html(report: Report) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(v.run.agent_id)}</td><td>{e(v.run.strategy.value)}</td><td>{v.run.generation}</td>"
        f"<td>{(v.run.best_fitness or 0):.4g}</td><td>v{v.run.champion_version}: {e(_score(v, v.run.champion_version))}</td>"
        f"<td>v{v.run.incumbent_version}: {e(_score(v, v.run.incumbent_version))}</td>"
        f"<td>{e(v.run.decision or '')}</td>"
        f"<td>{e(_verdict(v))}</td></tr>"
        for v in report.runs
    )
    rejected = ""
    if report.rejections:
        rejected = (
            "<h2>Rejected bundles</h2><table><tr><th>bundle</th><th>agent</th><th>module</th>"
            "<th>reason</th><th>serving now</th></tr>"
            + "".join(
                f"<tr><td>{e(r.bundle)}</td><td>{e(r.agent_id or '-')}</td>"
                f"<td>{'v' + str(r.version) if r.version is not None else '-'}</td>"
                f"<td>{e(r.reason)}</td><td>{_serving(r)}</td></tr>"
                for r in report.rejections
            )
            + "</table>"
        )
    decisions = "".join(
        f"<tr><td>{e(d.at.strftime('%H:%M:%S'))}</td><td>{e(d.layer)}</td><td>{e(d.summary)}</td></tr>"
        for d in report.decisions
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Chimera cycle {e(report.execution_id)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#1f2328}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #d0d7de;padding:4px 8px;text-align:left}}th{{background:#f6f8fa}}</style></head>
<body><h1>Optimization cycle {e(report.execution_id)}</h1>
<p>Status: <b>{e(report.status)}</b>, {report.seconds:.1f} s.</p>{rejected}
<h2>Fitness per generation</h2>{_plot_svg(report)}
<h2>Canaries</h2>{_canaries_html(report)}
<h2>Cost</h2>{_cost_html(report)}
<h2>Runs</h2><table><tr><th>agent</th><th>strategy</th><th>generations</th><th>best training fitness</th>
<th>candidate (hold-out)</th><th>incumbent (hold-out)</th><th>decision</th><th>canary</th></tr>{rows}</table>
<h2>What each layer decided</h2><table><tr><th>time</th><th>layer</th><th>decision</th></tr>{decisions}</table>
</body></html>
"""
