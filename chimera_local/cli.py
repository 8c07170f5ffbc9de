"""`chimera`: the operator's command line (local mode: the embedded default)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from chimera.domain.errors import (
    ChimeraError,
    CorruptStateError,
    NotFoundError,
    ValidationFailedError,
)
from chimera.domain.models import AgentId, ExperimentId, Version
from chimera.services.predictor_contracts import DEFAULT_MIN_R2, DEFAULT_MIN_ROWS
from chimera.settings import LocalSettings
from pydantic import StringConstraints, TypeAdapter, ValidationError

# `chimera run` when another execution drives some agent's run (sysexits' EX_TEMPFAIL:
# nothing failed, that agent was left to its owner; run again later).
EXIT_SKIPPED = 75
EXIT_REJECTED = 65  # EX_DATAERR: a bundle was rejected (the cycle ran; live modules serve on)


def _progress(quiet: bool) -> Any:
    names = {
        "Discover": "layer 1  discovering agents",
        "Plan": "layer 2  planning",
        "Validate": "layer 3  validating",
        "ChooseStrategy": "layer 6  choosing the search",
        "Place": "layer 8  placing and pricing",
        "Holdout": "layer 4  scoring candidate and incumbent on hold-out data",
        "Gate": "layer 3  gating the promotion",
        "Promote": "layer 7  promoting",
        "KeepIncumbent": "layer 7  keeping the incumbent",
        "Report": "layer 5  reporting",
    }

    def on_state(execution: str, state: str, data: Any) -> None:
        if quiet:
            return
        agent = data.get("agent_id", "") if isinstance(data, dict) else ""
        prefix = f"  [{agent}] " if agent else "  "
        if state == "Adapt" and isinstance(data, dict) and "tell" in data:
            t = data["tell"]
            best = t.get("best_fitness")
            print(
                f"{prefix}generation {t['generation']:>3}  best {best:.4g}"
                if best is not None
                else f"{prefix}generation {t['generation']:>3}",
                flush=True,
            )
        elif state in names:
            print(f"{prefix}{names[state]}", flush=True)

    return on_state


def cmd_run(args: argparse.Namespace) -> int:
    from chimera.runtime import deps

    from chimera_local import report
    from chimera_local.asl import ExecutionFailedError
    from chimera_local.cycles import LocalCycles
    from chimera_local.workflows import local_executor, state_machine_arn

    if args.placement is not None:  # layer 8 honours it (settings.placement) for this run
        os.environ["CHIMERA_PLACEMENT"] = args.placement
        deps.cache_clear()
    ports = deps()
    settings = ports.settings
    assert isinstance(settings, LocalSettings), "chimera run drives the local backend"
    name = f"cycle-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    print(f"chimera run {name}: state under {settings.home}/", flush=True)
    executor = local_executor(on_state=_progress(args.quiet))
    started = time.perf_counter()
    cycle_input = {"objective": args.objective, "gate": args.gate.replace("-", "_")}
    try:
        # Tracked like a Step Functions execution: a run it leaves behind (killed) is taken
        # over by the next cycle at once, a run it still drives is left alone.
        with LocalCycles(settings.home).track(name, cycle_input):
            output = executor.start(state_machine_arn("optimization-cycle"), cycle_input, name)
        status, items = "succeeded", output.get("work", [])
    except ExecutionFailedError as exc:
        status, items = f"failed ({exc})", []
    seconds = time.perf_counter() - started
    period = f"{ports.clock.now():%Y-%m}"
    rep = report.collect(ports.store, name, status, seconds, items, (period, ports.budget_usd))
    print()
    print(report.text(rep))
    out_dir = settings.home / "reports"
    out_dir.mkdir(parents=True, exist_ok=True)
    page = report.to_html(rep)
    (out_dir / f"{name}.html").write_text(page)
    (out_dir / "latest.html").write_text(page)
    print(f"\nReport: {out_dir / (name + '.html')}")
    failed = status != "succeeded" or any(i.get("status") == "failed" for i in items)
    if failed:
        return 1
    if rep.rejections:  # an upload needs the operator: say so in the status, not only above
        print(f"{len(rep.rejections)} bundle(s) rejected, see above", file=sys.stderr)
        return EXIT_REJECTED
    skipped = [i for i in items if (i.get("outcome") or {}).get("status") == "skipped"]
    for item in skipped:
        print(f"{item['agent_id']}: {item['outcome']['decision']}", file=sys.stderr)
    return EXIT_SKIPPED if skipped else 0


def _holdout_scores(store: Any, agent_id: str) -> dict[int, float | None]:
    """The latest hold-out score per genome version (hold-out job ids end in :holdout:vN)."""
    scores: dict[int, float | None] = {}
    for k in store.list_kpis(agent_id):
        if ":holdout:" in k.job_id:
            scores[k.genome_version] = k.score
    return scores


def _status_row(store: Any, agent: Any) -> dict[str, Any]:
    """One agent's row; stored state of it that does not read is named under `problems`."""
    names = [g.name for g in agent.manifest.genome]
    row: dict[str, Any] = {
        "agent_id": agent.agent_id,
        "suite": agent.manifest.suite,
        "weights": {},
        "live_version": None,
        "genes": None,
        "problems": [],
    }
    try:
        alias = store.get_alias(agent.agent_id)
        if alias is not None:
            genome = store.get_genome(agent.agent_id, alias.primary_version)
            row |= {
                "weights": {str(v): w for v, w in sorted(alias.weights.items())},
                "live_version": genome.version,
                "genes": dict(zip(names, genome.genes, strict=True)),
                "alias_revision": alias.revision,
                "source_run": genome.source_run,
                "training_fitness": genome.fitness,
                "holdout_score": _holdout_scores(store, agent.agent_id).get(genome.version),
            }
    except (CorruptStateError, NotFoundError) as exc:
        row["problems"].append(f"live genome: {exc}")
    runs = store.list_runs(agent.agent_id)
    if runs:
        last = runs[-1]
        row["last_run"] = {
            "run_id": last.run_id,
            "status": last.status.value,
            "generations": last.generation,
            "decision": last.decision,
        }
    return row


def cmd_status(args: argparse.Namespace) -> int:
    """Every agent's live genome and last run. Stored items that do not read are skipped and
    listed (stdout, or stderr beside --json): one bad record never hides the others."""
    from chimera.runtime import deps

    store = deps().store
    rows = [_status_row(store, agent) for agent in store.list_agents()]
    quarantined = store.list_quarantined()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        for q in quarantined:
            print(f"chimera: unreadable, skipped: {q.pk}/{q.sk}: {q.reason}", file=sys.stderr)
        return 0
    if not rows:
        print("No agents yet: run `chimera run` first.")
    for row in rows:
        print(f"{row['agent_id']}  ({row['suite']})")
        if row["live_version"] is None:
            print("  no live genome")
        else:
            score = row["holdout_score"]
            weights = ", ".join(f"v{v}: {w:g}" for v, w in row["weights"].items())
            print(
                f"  live: v{row['live_version']} (weights {weights}; alias revision "
                f"{row['alias_revision']}, from {row['source_run'] or 'manifest defaults'})"
            )
            print(f"  hold-out score: {score:.4g}" if score is not None else "  hold-out score: -")
            live_genes: dict[str, float] = row["genes"]
            genes = ", ".join(f"{k}={v:.4g}" for k, v in list(live_genes.items())[:8])
            more = len(live_genes) - 8
            print(f"  genes: {genes}" + (f", ... (+{more})" if more > 0 else ""))
        for problem in row["problems"]:
            print(f"  problem: {problem}")
        if "last_run" in row:
            r = row["last_run"]
            print(
                f"  last run: {r['run_id']} {r['status']}, {r['generations']} generations, "
                f"{r['decision']}"
            )
    if quarantined:
        print(f"\nUnreadable stored items, skipped ({len(quarantined)}):")
        for q in quarantined:
            print(f"  {q.pk}/{q.sk}: {q.reason}")
        print("  (fix or delete each item; readers go on without it meanwhile)")
    return 0


def cmd_genomes(args: argparse.Namespace) -> int:
    from chimera.runtime import deps

    store = deps().store
    agent = store.get_agent(args.agent_id)
    names = [g.name for g in agent.manifest.genome]
    alias = store.get_alias(args.agent_id)
    scores = _holdout_scores(store, args.agent_id)
    rows: list[dict[str, Any]] = [
        {
            "version": g.version,
            "live_weight": alias.weights.get(g.version, 0.0) if alias else 0.0,
            "genes": dict(zip(names, g.genes, strict=True)),
            "training_fitness": g.fitness,
            "holdout_score": scores.get(g.version),
            "parent_version": g.parent_version,
            "source_run": g.source_run,
            "created_at": g.created_at.isoformat(),
        }
        for g in store.list_genomes(args.agent_id)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        live = f" live ({r['live_weight']:g})" if r["live_weight"] else ""
        fit = f"{r['training_fitness']:.4g}" if r["training_fitness"] is not None else "-"
        hold = f"{r['holdout_score']:.4g}" if r["holdout_score"] is not None else "-"
        print(
            f"v{r['version']}{live}  fitness {fit}  hold-out {hold}  "
            f"from {r['source_run'] or 'defaults'}  {r['created_at'][:19]}"
        )
    return 0


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "-" if x is None else format(x, fmt)


def cmd_experiments(args: argparse.Namespace) -> int:
    """Experiments (canaries), newest first: what `GET /experiments` answers."""
    from chimera.domain.models import ExperimentStatus
    from chimera.runtime import deps
    from chimera.services import queries

    status = ExperimentStatus(args.status) if args.status else None
    views = queries.list_experiments(deps(), args.agent, status)
    if args.json:
        print(json.dumps([v.model_dump(mode="json") for v in views], indent=2))
        return 0
    if not views:
        print("No experiments yet: `chimera run` starts a canary for each champion.")
        return 0
    # STEP: the (last) weight step reached, and the candidate's share of traffic in it.
    header = ("EXPERIMENT", "AGENT", "CANDIDATE", "INCUMBENT", "STATUS", "VERDICT", "STEP")
    rows = [
        (
            v.experiment_id,
            v.agent_id,
            f"v{v.candidate_version}",
            f"v{v.incumbent_version}",
            v.status,
            v.verdict or "-",
            f"{v.step + 1}/{len(v.config.steps)}:{v.weight:.0%}",
        )
        for v in views
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """One experiment and its statistic over time: what `GET /experiments/{id}` answers."""
    from chimera.runtime import deps
    from chimera.services import queries

    view = queries.get_experiment(args.experiment_id, deps())
    if args.json:
        print(json.dumps(view.model_dump(mode="json"), indent=2))
        return 0
    verdict = f", {view.verdict}" if view.verdict else ""
    print(
        f"{view.experiment_id}: {view.agent_id} v{view.candidate_version} against "
        f"v{view.incumbent_version}, {view.status}{verdict}"
    )
    print(f"  steps {', '.join(f'{w:.0%}' for w in view.config.steps)}; now {view.weight:.0%}")
    if view.reason:
        print(f"  reason: {view.reason}")
    print(
        "  seq  step  weight  incumbent  candidate  difference  confidence sequence  "
        "p-value  SRM p  decision"
    )
    for p in view.points:
        interval = f"[{_num(p.lower)}, {_num(p.upper)}]"
        print(
            f"  {p.seq:>3}  {p.step:>4}  {p.weight:>6.0%}  {p.n_control:>9}  {p.n_treatment:>9}"
            f"  {_num(p.difference):>10}  {interval:>19}  {p.p_value:>7.3g}  "
            f"{_num(p.srm_p, '.3g'):>5}  {p.decision}"
        )
    if not view.points:
        print("  (no analysis yet)")
    return 0


# What the use cases name a bad input, as the command line spells it.
ROLLBACK_OPTIONS = {"agent_id": "AGENT", "to_version": "--to"}


def cmd_rollback(args: argparse.Namespace) -> int:
    """Point an agent's alias at an earlier version: what `POST /agents/{id}/rollback` does."""
    from chimera.runtime import deps
    from chimera.services import operator

    try:
        view = operator.rollback_agent(args.agent_id, args.to, args.reason, deps())
    except ChimeraError as exc:
        option = ROLLBACK_OPTIONS.get(str(getattr(exc, "field", "")))
        if option is None:
            raise
        print(f"chimera rollback: {option}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(view.model_dump(mode="json"), indent=2))
        return 0
    if view.stopped_experiment is not None:
        print(f"{view.agent_id}: stopped the canary {view.stopped_experiment.experiment_id}")
    if view.changed:
        print(
            f"{view.agent_id}: rolled back from v{view.from_version} to v{view.to_version} "
            f"(alias revision {view.alias_revision})"
        )
    else:
        print(f"{view.agent_id}: already serves v{view.to_version} only; nothing changed")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from chimera.runtime import deps

    from chimera_local.serve import make_server

    deps()  # a damaged or unreadable state.db is refused now, not at the first request
    server = make_server(args.host, args.port)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    print(f"chimera serve: http://{host}:{port}  (OpenAPI: docs/openapi.json; Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_traffic(args: argparse.Namespace) -> int:
    """Drive live jobs through the same path as POST /agents/{id}/jobs (simulated time)."""
    from chimera.runtime import deps
    from chimera.services.jobs import Drift, Fault

    from chimera_local import traffic

    fault = None
    if args.degrade or args.slow or args.drift:
        fault = Fault(
            degrade=dict(args.degrade),
            slow=dict(args.slow),
            drift=Drift(*args.drift) if args.drift else None,
            seed=args.seed,
        )
    try:
        summary = traffic.drive(
            deps(),
            args.agent,
            jobs=args.jobs,
            rate=args.rate,
            fault=fault,
            seed=args.seed,
            label_delay_s=args.label_delay,
        )
    except NotFoundError as exc:  # an unknown agent, or one with nothing live to serve
        print(f"chimera traffic: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        print(traffic.text(summary))
    return 0


def _usd(x: float | None) -> str:
    return "-" if x is None else f"${x:.6f}"


def cmd_cost(args: argparse.Namespace) -> int:
    """The period's budget and its ledger, estimated against actual: what `GET /budget` and
    `GET /costs` answer (every page)."""
    from chimera.runtime import deps
    from chimera.services import costs

    ports = deps()
    pages = [costs.list_costs(ports, args.period, args.run, costs.MAX_LIMIT)]
    while pages[-1].next_cursor is not None:
        cursor = pages[-1].next_cursor
        pages.append(costs.list_costs(ports, args.period, args.run, costs.MAX_LIMIT, cursor))
    entries = [e for page in pages for e in page.entries]
    first = pages[0]
    period = args.period or first.period or costs.current_period(ports)
    budget = costs.budget(ports, period)
    if args.json:
        out = {
            "budget": budget.model_dump(mode="json"),
            "period": first.period,
            "run_id": first.run_id,
            "entries": [e.model_dump(mode="json") for e in entries],
            "totals": first.totals.model_dump(mode="json"),
            "by_run": {k: v.model_dump(mode="json") for k, v in first.by_run.items()},
            "by_placement": {k: v.model_dump(mode="json") for k, v in first.by_placement.items()},
        }
        print(json.dumps(out, indent=2))
        return 0
    used = "-" if budget.fraction_used is None else f"{budget.fraction_used:.1%}"
    fired = ", ".join(f"{t:.0%}" for t in budget.thresholds_fired) or "none"
    print(
        f"Budget {budget.period}: {_usd(budget.budget_usd)}; spent {_usd(budget.spent_usd)} "
        f"({used}), reserved {_usd(budget.reserved_usd)}, available "
        f"{_usd(budget.available_usd)}; thresholds fired: {fired}"
    )
    scope = f"run {args.run}" if args.run else f"period {first.period}"
    if not entries:
        print(f"No ledger entries for the {scope}.")
        return 0
    print(f"\nLedger of the {scope} ({len(entries)} segments):")
    header = ("RUN", "GENERATIONS", "PLACEMENT", "STATUS", "ESTIMATED", "ACTUAL", "ACTUAL-EST")
    rows = [
        (
            e.run_id,
            "training job" if e.kind == "training" else f"{e.first_generation}-{e.last_generation}",
            e.placement + (" (degraded)" if e.degraded else ""),
            e.status,
            _usd(e.estimated_usd),
            _usd(e.actual_usd),
            "-" if e.difference_usd is None else f"{e.difference_usd:+.6f}",
        )
        for e in entries
    ]
    _table(header, rows)
    for title, groups in (("run", first.by_run), ("placement", first.by_placement)):
        print(f"\nBy {title} (committed segments: estimated against actual):")
        _table(
            (title.upper(), "SEGMENTS", "OPEN", "HELD", "ESTIMATED", "ACTUAL", "ACTUAL/EST"),
            [
                (
                    name,
                    str(t.entries),
                    str(t.open),
                    _usd(t.held_usd),
                    _usd(t.committed_estimated_usd),
                    _usd(t.actual_usd),
                    "-" if t.actual_over_estimated is None else f"{t.actual_over_estimated:.3f}",
                )
                for name, t in [*groups.items(), ("all", first.totals)]
            ],
        )
    return 0


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _version_pair(what: str, low: float, high: float) -> Any:
    """VERSION:VALUE with VALUE in [low, high] (--degrade, --slow)."""

    def parse(text: str) -> tuple[int, float]:
        version, sep, value = text.partition(":")
        try:
            v, x = int(version), float(value)
        except ValueError:
            v, x = 0, float("nan")
        if not sep or not 1 <= v <= 99_999_999 or not low <= x <= high:
            raise argparse.ArgumentTypeError(
                f"{text[:80]!r} is not VERSION:{what} (a genome version, {what} in "
                f"[{low:g}, {high:g}])"
            )
        return v, x

    return parse


def _drift(text: str) -> tuple[int, float]:
    """JOB:AMOUNT: from the drive's job JOB (0: the first) on, the environment drifts."""
    job, sep, amount = text.partition(":")
    try:
        j, a = int(job), float(amount)
    except ValueError:
        j, a = -1, float("nan")
    if not sep or j < 0 or not -1e6 <= a <= 1e6:
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not JOB:AMOUNT (a job number >= 0, a finite amount)"
        )
    return j, a


def _positive(kind: type, high: float) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not 0 < value <= high:
            raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a number in (0, {high:g}]")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86_400 * 365:
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a number of seconds (0 to a year)")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a seed (0 to 2**32 - 1)")
    return value


def _objective(text: str) -> str:
    """--objective: what the plan records (PlanRequest.objective: 1 to 500 characters)."""
    if not 1 <= len(text) <= 500:
        raise argparse.ArgumentTypeError(f"1 to 500 characters, got {len(text)}")
    return text


def _model_type(annotation: Any, what: str, example: str) -> Any:
    """An argparse type that checks an argument by the models' own annotated type (one
    definition of what an agent id or a genome version is, here and at every other edge)."""
    adapter = TypeAdapter(annotation)

    def parse(text: str) -> Any:
        try:
            return adapter.validate_python(text, strict=False)
        except ValidationError:
            shown = text if len(text) <= 80 else text[:80] + "..."
            raise argparse.ArgumentTypeError(f"{shown!r} is not {what} ({example})") from None

    return parse


_agent_id = _model_type(AgentId, "an agent id", "lowercase letters, digits and '-', at most 63")
_version = _model_type(Version, "a genome version", "1 to 99999999")


def _reason(text: str) -> str:
    if not 1 <= len(text) <= 1000:
        raise argparse.ArgumentTypeError(f"1 to 1000 characters, got {len(text)}")
    return text


_experiment_id = _model_type(
    ExperimentId, "an experiment id", "letters, digits and _.:-, at most 160"
)


def _period(text: str) -> str:
    from chimera.services.costs import check_period

    try:
        return check_period(text)
    except ChimeraError:
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a month (YYYY-MM)") from None


_run_id = _model_type(
    Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")],
    "an evolution run id",
    "letters, digits and _.:-, at most 128",
)


# -- chimera train-predictor (the predictor-training state machine, run locally) -------------
def cmd_train_predictor(args: argparse.Namespace) -> int:
    """Train the agent's performance predictor on its stored history and install it (when its
    held-out R² reaches the floor): the predictor-training state machine through the local
    executor, its training job the SageMaker entrypoint in a subprocess on the CPU."""
    from chimera.runtime import deps
    from chimera.services.predictor_contracts import PredictorTrainingInput

    from chimera_local.asl import ExecutionFailedError
    from chimera_local.workflows import local_executor, state_machine_arn

    ports = deps()
    ports.store.get_agent(args.agent_id)  # an unknown agent: a clear error naming it
    hyper: dict[str, str] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValidationFailedError("--set", f"{item[:80]!r} is not NAME=VALUE")
        hyper[name] = value
    try:
        request = PredictorTrainingInput(
            agent_id=args.agent_id,
            hyperparameters=hyper,
            min_rows=args.min_rows,
            min_r2=args.min_r2,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValidationFailedError(where, str(err["msg"])) from None
    name = f"predictor-{args.agent_id}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    steps = {
        "ExportHistory": "layer 5  exporting the agent's history",
        "ReserveTraining": "layer 8  reserving the training job's cost in the month's budget",
        "Train": "         training (SageMaker training job; locally on the CPU)",
        "InstallPredictor": "layer 5  validating and installing the predictor",
    }

    def on_state(execution: str, state: str, data: Any) -> None:
        if not args.json and state in steps:
            print(steps[state], flush=True)

    executor = local_executor(on_state=on_state)
    try:
        output = executor.start(
            state_machine_arn("predictor-training"), request.model_dump(mode="json"), name
        )
    except ExecutionFailedError as exc:
        recorded = [d for d in ports.store.list_decisions(name) if d.layer == "refinement"]
        why = recorded[-1].summary if recorded else str(exc)
        if args.json:
            print(json.dumps({"execution": name, "status": "failed", "error": why}))
        else:
            print(f"chimera train-predictor {name}: failed: {why}", file=sys.stderr)
        return 1
    export, install = output["export"], output.get("install")
    reservation = output.get("reservation")  # layer 8's: absent when nothing was exported
    if args.json:
        shown = {"export": export, "reservation": reservation, "install": install}
        print(json.dumps({"execution": name, **shown}, indent=2))
    elif install is None:
        refused = reservation is not None and not reservation["reserved"]
        print(f"{args.agent_id}: refused: {(reservation if refused else export)['reason']}")
    else:
        print(
            f"{args.agent_id}: held-out R² {install['r2']:.3f}, within 10 %: "
            f"{install['within_10pct']:.1%} ({install['n_test']} held-out rows, split by "
            f"{install['split']}; {install['n_train']} trained on)"
        )
        print(f"installed: {'yes, at ' + install['key'] if install['installed'] else 'no'}")
        print(install["reason"])
    return EXIT_SKIPPED if install is None else 0


def _register_train(sub: Any) -> None:
    """`chimera train`, where the SageMaker launcher (chimera_local/sagemaker_launch.py, the
    sagemaker SDK an optional extra) is present."""
    if importlib.util.find_spec("chimera_local.sagemaker_launch") is None:
        return
    launch = importlib.import_module("chimera_local.sagemaker_launch")
    train = launch.add_parser(sub)
    if train is not None:
        train.set_defaults(func=launch.cmd)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a port (0 to 65535)")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chimera", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a full optimization cycle on the bundled agents")
    run.add_argument("--objective", default="improve every agent on its suite", type=_objective)
    run.add_argument(
        "--gate",
        choices=("improvement", "non-inferiority"),
        default="improvement",
        help="what a champion must show on the hold-out before its canary: that it is better "
        "(default), or only that it is no worse than the suite's margin (a change wanted for "
        "another reason)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument(
        "--placement",
        choices=("auto", "lambda", "batch", "sagemaker"),
        help="where layer 8 places each segment: auto (the cheapest that keeps the deadline; "
        "the default) or one route (sets CHIMERA_PLACEMENT for the run)",
    )
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="the live genome of every agent, from the store")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    genomes = sub.add_parser("genomes", help="an agent's genome versions")
    genomes.add_argument("agent_id", type=_agent_id)
    genomes.add_argument("--json", action="store_true")
    genomes.set_defaults(func=cmd_genomes)
    experiments = sub.add_parser("experiments", help="experiments (canaries), newest first")
    experiments.add_argument("--agent", type=_agent_id, help="only this agent's")
    experiments.add_argument(
        "--status", choices=("running", "concluded", "stopped"), help="only those in this status"
    )
    experiments.add_argument("--json", action="store_true")
    experiments.set_defaults(func=cmd_experiments)
    experiment = sub.add_parser("experiment", help="one experiment and its statistic over time")
    experiment.add_argument("experiment_id", type=_experiment_id)
    experiment.add_argument("--json", action="store_true")
    experiment.set_defaults(func=cmd_experiment)
    rollback = sub.add_parser(
        "rollback", help="point an agent's alias at an earlier version (stops a running canary)"
    )
    rollback.add_argument("agent_id", type=_agent_id, metavar="AGENT")
    rollback.add_argument(
        "--to",
        type=_version,
        metavar="VERSION",
        help="the version to serve (default: the one the live version evolved from, or a "
        "running canary's incumbent)",
    )
    rollback.add_argument(
        "--reason", type=_reason, default="operator rollback (chimera rollback)", metavar="TEXT"
    )
    rollback.add_argument("--json", action="store_true")
    rollback.set_defaults(func=cmd_rollback)
    serve = sub.add_parser("serve", help="answer the HTTP API on localhost (same resolver)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8080)
    serve.set_defaults(func=cmd_serve)
    traffic = sub.add_parser(
        "traffic", help="drive live jobs on an agent (simulated time; fault and drift injection)"
    )
    traffic.add_argument("--agent", required=True, type=_agent_id)
    traffic.add_argument("--jobs", required=True, type=_positive(int, 1_000_000))
    traffic.add_argument("--rate", type=_positive(float, 1e6), default=10.0, help="jobs/s")
    traffic.add_argument(
        "--degrade",
        action="append",
        default=[],
        type=_version_pair("FACTOR", 0.0, 1.0),
        metavar="VERSION:FACTOR",
        help="that version keeps each answer with probability FACTOR, else a wrong one",
    )
    traffic.add_argument(
        "--slow",
        action="append",
        default=[],
        type=_version_pair("MS", 0.0, 86_400_000.0),
        metavar="VERSION:MS",
        help="that version's recorded latency is MS milliseconds longer",
    )
    traffic.add_argument(
        "--drift",
        type=_drift,
        metavar="JOB:AMOUNT",
        help="from job JOB on, the environment drifts by AMOUNT (cartpole: sensor noise sd; "
        "breast-cancer: feature shift in training sds)",
    )
    traffic.add_argument("--seed", type=_seed, default=0)
    traffic.add_argument(
        "--label-delay", type=_seconds, default=30.0, help="simulated s before a label arrives"
    )
    traffic.add_argument("--json", action="store_true")
    traffic.set_defaults(func=cmd_traffic)
    cost = sub.add_parser(
        "cost", help="the period's budget and its ledger, estimated against actual cost"
    )
    cost.add_argument(
        "--period", type=_period, metavar="YYYY-MM", help="the month (default: the current one)"
    )
    cost.add_argument("--run", type=_run_id, metavar="RUN_ID", help="only this run's segments")
    cost.add_argument("--json", action="store_true")
    cost.set_defaults(func=cmd_cost)
    train_predictor = sub.add_parser(
        "train-predictor",
        help="train an agent's performance predictor on its history (a SageMaker training job, "
        "locally on the CPU) and install it when its held-out R² reaches the floor",
    )
    train_predictor.add_argument("agent_id", type=_agent_id, metavar="AGENT_ID")
    train_predictor.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a trainer hyperparameter (hidden, epochs, lr, ...; gpu_jobs/predictor/train.py)",
    )
    train_predictor.add_argument(
        "--min-rows",
        type=int,
        default=DEFAULT_MIN_ROWS,
        help=f"evaluated candidates needed (default {DEFAULT_MIN_ROWS})",
    )
    train_predictor.add_argument(
        "--min-r2",
        type=float,
        default=DEFAULT_MIN_R2,
        help=f"held-out R² floor to install (default {DEFAULT_MIN_R2})",
    )
    train_predictor.add_argument("--json", action="store_true")
    train_predictor.set_defaults(func=cmd_train_predictor)
    _register_train(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ChimeraError as exc:
        print(f"chimera: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
