"""`chimera`: the operator's command line (local mode: the embedded default)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from chimera.domain.errors import ChimeraError, CorruptStateError, NotFoundError
from chimera.settings import LocalSettings

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

    ports = deps()
    settings = ports.settings
    assert isinstance(settings, LocalSettings), "chimera run drives the local backend"
    name = f"cycle-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    print(f"chimera run {name}: state under {settings.home}/", flush=True)
    executor = local_executor(on_state=_progress(args.quiet))
    started = time.perf_counter()
    cycle_input = {"objective": args.objective}
    try:
        # Tracked like a Step Functions execution: a run it leaves behind (killed) is taken
        # over by the next cycle at once, a run it still drives is left alone.
        with LocalCycles(settings.home).track(name, cycle_input):
            output = executor.start(state_machine_arn("optimization-cycle"), cycle_input, name)
        status, items = "succeeded", output.get("work", [])
    except ExecutionFailedError as exc:
        status, items = f"failed ({exc})", []
    seconds = time.perf_counter() - started
    rep = report.collect(ports.store, name, status, seconds, items)
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


def _objective(text: str) -> str:
    """--objective: what the plan records (PlanRequest.objective: 1 to 500 characters)."""
    if not 1 <= len(text) <= 500:
        raise argparse.ArgumentTypeError(f"1 to 500 characters, got {len(text)}")
    return text


def _agent_id(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", text):
        shown = text if len(text) <= 80 else text[:80] + "..."
        raise argparse.ArgumentTypeError(
            f"{shown!r} is not an agent id (lowercase letters, digits and '-', at most 63)"
        )
    return text


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
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="the live genome of every agent, from the store")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    genomes = sub.add_parser("genomes", help="an agent's genome versions")
    genomes.add_argument("agent_id", type=_agent_id)
    genomes.add_argument("--json", action="store_true")
    genomes.set_defaults(func=cmd_genomes)
    serve = sub.add_parser("serve", help="answer the HTTP API on localhost (same resolver)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8080)
    serve.set_defaults(func=cmd_serve)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ChimeraError as exc:
        print(f"chimera: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
