"""Soak test of the segment job's resume: SIGKILL at any moment, resume, the same run.

The requirement (issue 8 part 2): a segment job killed at any moment and started again
resumes from its last tell and ends as the uninterrupted job ends for the same seed. The
functional tests kill at chosen points (an ask, a tell); this harness kills anywhere.

Setup, once: a local deployment with cartpole-linear only (its torch twin, CPU), a run started
through the handlers as evolution-run starts it (discovery, validation, layer 6's choice made
--population / --generations, layer 7's start; seed --seed, shards of --shard-size). Every trial
runs on a copy of that freshly started store.

Reference: the job uninterrupted, one segment up to the run's last generation: the real
entrypoint (`python -m gpu_jobs.segment.entrypoint`, the job definition's command with Batch's
parameter substitution) in a subprocess with CHIMERA_HOME pointing at the copy.

Trials, one process at a time (this machine's two cores are shared):

* random (--kills): the job is started and SIGKILLed from outside after a delay drawn
  uniformly from [0, 1.1 x the job's wall time]: during the interpreter's start and imports,
  the first restore (owned_run, the twin check), an ask's, a shard's, a tell's or an adapt's
  store write, an evaluation, or after the end. The job's wall time is the reference's at
  first, then the last random trial's: its kill delay plus its resume's wall time, or its
  own duration when it ended before the kill (the machine is shared: a job's duration
  follows its load);
* writes (--write-kills): the job kills itself (SIGKILL, no clean-up) at its k-th store write
  (k uniform over the writes the reference made), `before` the write's transaction begins,
  `inside` it (every statement executed, COMMIT not), or `after` it committed. The write
  counter wraps the SQLite adapter's `_commit` and `_insert` in the child process only
  (`python bench/segment_soak.py child ...`); the job is otherwise the real entrypoint.

After a kill the store is read to name the phase it was hit in (nothing written yet; generation
g asked with s of its shards stored; g told, its adapt pending or asked), then the real job is
started again to the end, and the run's outcome is compared with the reference's: generation,
stop reason, champion genes, best fitness, optimizer state, the stored fitness history, every
candidate's genes and fitness. Any difference is printed, field by field, with the trial's
home kept for inspection. Exit status 1 when any trial diverged.

Run:  .venv/bin/python bench/segment_soak.py [--kills 30] [--write-kills 30] [--seed 7]
      [--write-at K:WHERE ...] [--generations 16] [--population 24] [--shard-size 10]
      [--no-target] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AGENT = "cartpole-linear"
EXECUTION = "segment-soak"
RUN_SEED = 20_261_108
WHERE = ("before", "inside", "after")
WRITE_COUNT_TAG = "segment-soak: store writes "


# -- the child: the real entrypoint, killing itself at its k-th store write ------------------
def child(argv: list[str]) -> int:
    """`child KILL_AT WHERE -- ENTRYPOINT ARGS`: KILL_AT 0 counts the writes, kills nowhere."""
    kill_at, where = int(argv[0]), argv[1]
    if where not in WHERE or argv[2] != "--":
        raise SystemExit(f"child: expected KILL_AT {{{','.join(WHERE)}}} -- ARGS, got {argv}")
    from chimera_local.sqlite_store import SqliteStore
    from gpu_jobs.segment import entrypoint

    writes = 0

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    class CommitKiller:
        """The connection, except that COMMIT kills the process instead."""

        def __init__(self, conn: Any) -> None:
            self._conn = conn

        def execute(self, sql: str, *args: Any) -> Any:
            if sql.strip().upper() == "COMMIT":
                die()
            return self._conn.execute(sql, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

    def counted(method: Any) -> Any:
        def wrapper(self: SqliteStore, *args: Any) -> Any:
            nonlocal writes
            writes += 1
            if writes != kill_at:
                return method(self, *args)
            if where == "before":
                die()
            if where == "inside":
                conn = self._conn()
                self._conn = lambda: CommitKiller(conn)  # type: ignore[method-assign,return-value,assignment]
                method(self, *args)  # `_insert` has no COMMIT (autocommit): killed after
                die()
            result = method(self, *args)
            die()
            return result

        return wrapper

    SqliteStore._commit = counted(SqliteStore._commit)  # type: ignore[method-assign]
    SqliteStore._insert = counted(SqliteStore._insert)  # type: ignore[method-assign]
    code = entrypoint.main(argv[3:])
    print(f"{WRITE_COUNT_TAG}{writes}", file=sys.stderr, flush=True)
    return code


# -- the harness ---------------------------------------------------------------------------
@dataclass
class Soak:
    work: Path
    generations: int
    population: int
    shard_size: int
    target: bool = True

    def env(self, home: Path) -> dict[str, str]:
        return os.environ | {
            "CHIMERA_HOME": str(home),
            "CHIMERA_AGENTS_DIR": str(self.work / "agents"),
            "CHIMERA_SHARD_SIZE": str(self.shard_size),
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "AWS_BATCH_JOB_ID": "segment-soak",
            "OMP_NUM_THREADS": "1",  # one core per job: the machine is shared
        }

    def use(self, home: Path) -> Any:
        """This process's store of `home` (the handlers' deps switched to it)."""
        from chimera import runtime

        os.environ.update(self.env(home))
        runtime.deps.cache_clear()
        return runtime.deps().store

    def template(self) -> tuple[Path, str]:
        """A deployment with cartpole-linear only and a run started, as evolution-run does."""
        from chimera.settings import BUNDLED_AGENTS

        from chimera_local.workflows import handler_for

        shutil.copytree(BUNDLED_AGENTS / AGENT, self.work / "agents" / AGENT)
        home = self.work / "template"
        store = self.use(home)
        handler_for("discovery")({"action": "discover", "execution_id": EXECUTION})
        ok = handler_for("validation")(
            {"action": "validate", "execution_id": EXECUTION, "agent_id": AGENT}
        )
        if not ok["ok"]:
            raise SystemExit(f"validation refused {AGENT}: {ok}")
        choice = handler_for("meta_evolution")(
            {"action": "choose", "execution_id": EXECUTION, "agent_id": AGENT}
        )
        choice |= {"population_size": self.population, "max_generations": self.generations}
        if not self.target:
            choice["target_fitness"] = None
        started = handler_for("evolution")(
            {
                "action": "start",
                "execution_id": EXECUTION,
                "agent_id": AGENT,
                "choice": choice,
                "seed": RUN_SEED,
            }
        )
        store.close()  # the WAL checkpointed into state.db: the folder copies whole
        return home, str(started["run_id"])

    def copy(self, template: Path, name: str) -> Path:
        home = self.work / name
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(template, home)
        return home

    def command(self, run_id: str) -> list[str]:
        from gpu_jobs.evaluate_population import definition

        params = {
            "run_id": run_id,
            "execution_id": EXECUTION,
            "last_generation": str(self.generations - 1),
        }
        return [*definition.command(params)[1:], "--device", "cpu"]

    def job(self, home: Path, run_id: str, kill: tuple[int, str] | None = None) -> Any:
        args = self.command(run_id)
        if kill is not None:
            args = [str(REPO / "bench" / "segment_soak.py"), "child", *map(str, kill), "--"]
            args += self.command(run_id)[2:]
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env=self.env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def to_the_end(self, home: Path, run_id: str) -> tuple[dict[str, Any], str]:
        proc = self.job(home, run_id)
        out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"{home.name}: the job exited {proc.returncode}\n{err}")
        return json.loads(out.strip().splitlines()[-1]), err

    def phase(self, home: Path, run_id: str) -> str:
        """Where the kill left the run, from the store."""
        store = self.use(home)
        run = store.get_run(run_id)
        try:
            if run.asked_generation is not None:
                g = run.asked_generation
                shards = len(store._rows(f"SHARD#{run_id}#{g:06d}"))
                return f"asked g{g}, {shards} shard(s) stored"
            if run.generation == 0:
                return "nothing written (start, imports, first restore, twin check)"
            if run.stop_reason is not None or run.generation >= self.generations:
                return f"told g{run.generation - 1}, the last (adapt's stop maybe pending)"
            return f"told g{run.generation - 1}, next not asked (adapt maybe pending)"
        finally:
            store.close()

    def outcome(self, home: Path, run_id: str) -> dict[str, Any]:
        """Everything the run's result is, as the functional tests compare it."""
        store = self.use(home)
        try:
            run = store.get_run(run_id)
            generations = [store.get_generation(run_id, g) for g in range(run.generation)]
            return json.loads(
                json.dumps(
                    {
                        "generation": run.generation,
                        "asked": run.asked_generation,
                        "stop_reason": run.stop_reason,
                        "best_fitness": run.best_fitness,
                        "best_genes": run.best_genes,
                        "optimizer": run.optimizer_state,
                        "history": [
                            (p.generation, p.best, p.mean, p.std, p.evaluations)
                            for p in store.fitness_history(run_id)
                        ],
                        "genes": [[i.genes for i in g.individuals] for g in generations],
                        "fitness": [[i.fitness for i in g.individuals] for g in generations],
                    }
                )
            )
        finally:
            store.close()


def differences(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {json.dumps(got.get(key))[:300]} != reference {json.dumps(want[key])[:300]}"
        for key in want
        if got.get(key) != want[key]
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kills", type=int, default=30, help="SIGKILLs at a random delay")
    parser.add_argument("--write-kills", type=int, default=30, help="SIGKILLs at a store write")
    parser.add_argument(
        "--write-at",
        action="append",
        default=[],
        metavar="K:WHERE",
        help="also kill at write K (negative: from the last) before|inside|after it",
    )
    parser.add_argument("--seed", type=int, default=7, help="draws the delays and writes")
    parser.add_argument("--generations", type=int, default=16)
    parser.add_argument("--population", type=int, default=24)
    parser.add_argument("--shard-size", type=int, default=10)
    parser.add_argument(
        "--no-target", action="store_true", help="no target fitness: run every generation"
    )
    parser.add_argument("--work", type=Path, help="a folder for the stores (default: a temp)")
    args = parser.parse_args(argv)
    for name in ("kills", "write_kills"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')}: {getattr(args, name)} is negative")
    chosen: list[tuple[int, str]] = []
    for spec in args.write_at:
        k, _, where = spec.partition(":")
        if not k.lstrip("-").isdigit() or int(k) == 0 or where not in WHERE:
            parser.error(f"--write-at: {spec!r} is not K:{{{','.join(WHERE)}}} with K != 0")
        chosen.append((int(k), where))
    work = args.work or Path(tempfile.mkdtemp(prefix="segment-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    soak = Soak(work, args.generations, args.population, args.shard_size, not args.no_target)
    rng = random.Random(args.seed)

    template, run_id = soak.template()
    home = soak.copy(template, "reference")
    proc = soak.job(home, run_id, kill=(0, "after"))  # counts its writes, kills nowhere
    started = time.perf_counter()
    _, err = proc.communicate(timeout=900)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the reference job exited {proc.returncode}\n{err}")
    writes = int(err.rsplit(WRITE_COUNT_TAG, 1)[1].split()[0])
    reference = soak.outcome(home, run_id)
    print(
        f"reference: {reference['generation']} generations told ({reference['stop_reason']}), "
        f"best {reference['best_fitness']}, {writes} store writes, {wall:.2f} s wall"
    )

    # A random trial's delay is drawn when it starts, over the job's latest duration.
    trials: list[tuple[str, Any]] = [("random", None)] * args.kills
    trials += [
        ("write", (rng.randint(1, writes), rng.choice(WHERE))) for _ in range(args.write_kills)
    ]
    for k, where in chosen:
        if abs(k) > writes:
            raise SystemExit(f"--write-at: the job makes {writes} writes, not {abs(k)}")
        trials.append(("write", (k if k > 0 else writes + 1 + k, where)))
    phases: Counter[str] = Counter()
    diverged = 0
    for n, (mode, at) in enumerate(trials):
        home = soak.copy(template, f"trial-{n:03d}")
        if mode == "random":
            at = rng.uniform(0, 1.1 * wall)
            started = time.perf_counter()
            proc = soak.job(home, run_id)
            try:
                proc.communicate(timeout=at)
                wall = time.perf_counter() - started  # it ended first: its whole duration
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=900)
            what = f"SIGKILL at {at:.3f} s"
        else:
            proc = soak.job(home, run_id, kill=at)
            proc.communicate(timeout=900)
            what = f"SIGKILL {at[1]} write {at[0]}/{writes}"
        killed = proc.returncode == -signal.SIGKILL
        phase = soak.phase(home, run_id) if killed else "after the end (exited first)"
        phases[f"{mode}: {re.sub(r'g[0-9]+', 'g', phase)}"] += 1
        started = time.perf_counter()
        summary, _ = soak.to_the_end(home, run_id)
        if mode == "random" and killed:  # the killed part and the rest (one start more)
            wall = at + time.perf_counter() - started
        got = soak.outcome(home, run_id)
        diff = differences(got, reference)
        verdict = "same" if not diff else "DIVERGED"
        print(
            f"{n:3d} {what:<28} {phase:<58} resumed from g{summary['first_generation']}: {verdict}",
            flush=True,
        )
        if diff:
            diverged += 1
            for line in diff:
                print(f"      {line}")
            print(f"      kept: {home}")
        else:
            shutil.rmtree(home)
    print(
        f"\n{len(trials)} kills ({args.kills} random, {len(trials) - args.kills} at a store write):"
    )
    for phase, count in sorted(phases.items()):
        print(f"  {count:3d}  {phase}")
    print(f"diverged: {diverged} of {len(trials)}")
    if not diverged and args.work is None:
        shutil.rmtree(work)
    return 1 if diverged else 0


if __name__ == "__main__":
    sys.exit(main())
