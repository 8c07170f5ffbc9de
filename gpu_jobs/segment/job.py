"""One segment of an evolution run in one process: what evolution-segment does, in-process.

`run_segment` restores the run from the store and loops the same service calls the Lambda
segment makes, in the same order: `evolution.ask` -> evaluate -> `evolution.tell` ->
`meta.adapt`, until adapt says stop or the told generation reaches `last_generation`.

Checkpoints. Every tell is one (the store holds the optimizer's state, the told generation
and its fitness point), so a job started again, after SIGTERM or SIGKILL at any moment,
resumes from what is stored:

* a generation told is not redone (the run's `generation` is past it);
* a generation asked but not told is evaluated again: `ask` of an asked generation returns
  the stored candidates, the evaluation is deterministic, and its shard fitnesses are written
  again with the same values (`put_shard_fitness` is per shard, last write wins);
* adapt is asked first when the run has a told generation, so a job killed after adapt said
  stop (or after its segment's last tell) does not ask one generation more; adapt decides
  from the stored history only, so asking it again gives the answer it gave.

bench/segment_soak.py kills the job anywhere (at random moments, and before, inside or after
any of its store writes) and checks that the resumed job ends as the uninterrupted one.

Evaluation. With a twin (`AgentManifest.twin`), the twin is checked against the agent's
live module once per job, before anything is written (`check_agent`: TwinMismatchError
refuses the job), and each generation is evaluated in torch on `device` in one batch, laid
out in the shards `ask` returned (`evaluate_population_torch(..., blocks=...)`: each shard's
episodes those its own `evaluate_shard` would run), and its fitnesses are stored as those
shards' results (`store.put_shard_fitness`, the values `evaluate_shard` would store), so
`tell` reads them unchanged. Without a twin, each shard is evaluated in the WASM sandbox by
`execution.evaluate_shard` itself: slower, the same answer. On the CPU the twin is bit for bit
the WASM path (gpu_jobs/twins/cartpole.py), so the run's champion and history are the Lambda
placement's; on CUDA a long CartPole episode may differ (torch's sin/cos), and the champion is
re-scored in the WASM sandbox by the hold-out in any case.

Stopping. `stop` (the entrypoint sets it on SIGTERM) is looked at between generations: the
job ends with `interrupted=True` after the last tell, never in the middle of one.

Pure orchestration over the ports: no environment, no signals, no printing.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from chimera.domain.models import EvolutionRun
from chimera.domain.optimizers import Fitness
from chimera.domain.suites import get_suite
from chimera.services import evolution, execution, meta
from chimera.services.contracts import (
    AdaptRequest,
    AskRequest,
    AskResult,
    EvaluateShardRequest,
    TellRequest,
)
from chimera.services.deps import Deps

from gpu_jobs.twins import CheckedTwin, check_agent, evaluate_population_torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """auto: cuda when a GPU is available, else cpu; cuda without a GPU is refused."""
    if device not in DEVICES:
        raise ValueError(f"device: {device!r} is not one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda asked for, but torch sees no GPU")
    return device


@dataclass(frozen=True)
class SegmentOutcome:
    """What one job (one attempt) did."""

    run_id: str
    first_generation: int  # the run's generation when the job started
    generation: int  # the run's generation when it ended (told generations before it)
    generations: int  # told by this job
    evaluations: int  # candidates this job evaluated (a re-evaluated generation counts again)
    proceed: bool  # adapt's last answer: whether the run goes on after this segment
    reason: str  # adapt's reason, or why the job stopped
    interrupted: bool  # stopped between generations by `stop` (SIGTERM)
    device: str
    twin: str | None  # the twin family used, None when evaluated in the WASM sandbox
    seconds: float  # wall time of the job, measured
    evaluate_seconds: float  # of which evaluating

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "first_generation": self.first_generation,
            "generation": self.generation,
            "generations": self.generations,
            "evaluations": self.evaluations,
            "proceed": self.proceed,
            "reason": self.reason,
            "interrupted": self.interrupted,
            "device": self.device,
            "twin": self.twin,
            "seconds": round(self.seconds, 3),
            "evaluate_seconds": round(self.evaluate_seconds, 3),
        }


class _Evaluator:
    """Evaluates an asked generation and stores its fitness as the Lambda shards would."""

    def __init__(self, ports: Deps, run: EvolutionRun, device: str) -> None:
        self.ports, self.run, self.device = ports, run, device
        agent = ports.store.get_agent(run.agent_id)
        self.checked: CheckedTwin | None = None
        if agent.manifest.twin is not None:
            # TwinMismatchError propagates: the job is refused before anything is evaluated.
            self.checked = check_agent(ports, agent, device=device)
        self.suite = get_suite(run.suite)

    @property
    def twin(self) -> str | None:
        return None if self.checked is None else self.checked.twin.family

    def evaluate(self, asked: AskResult) -> int:
        if self.checked is None:
            for shard in asked.shards:
                request = EvaluateShardRequest.model_validate(shard.model_dump())
                execution.evaluate_shard(request, self.ports)
            return sum(s.stop - s.start for s in asked.shards)
        generation = self.ports.store.get_generation(self.run.run_id, asked.generation)
        individuals = generation.individuals
        genomes = np.array([i.genes for i in individuals], dtype=np.float32)
        shards = sorted(asked.shards, key=lambda s: s.start)
        result = evaluate_population_torch(
            self.checked,
            self.suite,
            genomes,
            seed=execution.generation_seed(self.run.seed, asked.generation),
            device=self.device,
            blocks=[s.stop - s.start for s in shards],
        )
        # As evaluate_shard stores them: a non-finite score is a failed (NaN) fitness.
        fitness = [Fitness((float(f) if math.isfinite(f) else math.nan,)) for f in result.fitness]
        for shard in shards:
            self.ports.store.put_shard_fitness(
                self.run.run_id,
                asked.generation,
                shard.shard,
                {
                    individuals[i].index: fitness[i].to_json()
                    for i in range(shard.start, shard.stop)
                },
            )
        return len(individuals)


def run_segment(
    run_id: str,
    execution_id: str,
    last_generation: int,
    ports: Deps,
    *,
    device: str = "cpu",
    stop: threading.Event | None = None,
) -> SegmentOutcome:
    """Run the run's generations up to `last_generation` (told), or until adapt says stop or
    `stop` is set; see the module's docstring. Refuses a run another execution drives
    (ConflictError), and an agent whose twin disagrees with its module (TwinMismatchError)."""
    started = time.perf_counter()
    if last_generation < 0:
        raise ValueError(f"last_generation: {last_generation} is negative")
    device = resolve_device(device)
    stop = stop or threading.Event()
    run = evolution.owned_run(ports, run_id, execution_id)
    evaluator = _Evaluator(ports, run, device)
    first = run.generation
    told, evaluations, evaluate_s = 0, 0, 0.0
    proceed, reason = True, f"generation {run.generation}: continue"
    if run.generation > 0:  # told before: is the run to go on at all?
        adapted = meta.adapt(AdaptRequest(execution_id=execution_id, run_id=run_id), ports)
        proceed, reason = adapted.proceed, adapted.reason
    generation = run.generation  # the next to ask: told generations are below it
    interrupted = False
    while proceed and generation <= last_generation:
        if stop.is_set():
            interrupted, reason = True, f"stopped before generation {generation} (SIGTERM)"
            break
        asked = evolution.ask(AskRequest(execution_id=execution_id, run_id=run_id), ports)
        t0 = time.perf_counter()
        evaluations += evaluator.evaluate(asked)
        evaluate_s += time.perf_counter() - t0
        result = evolution.tell(
            TellRequest(execution_id=execution_id, run_id=run_id, generation=asked.generation),
            ports,
        )
        told += 1
        generation = result.generation + 1
        adapted = meta.adapt(AdaptRequest(execution_id=execution_id, run_id=run_id), ports)
        proceed, reason = adapted.proceed, adapted.reason
    return SegmentOutcome(
        run_id=run_id,
        first_generation=first,
        generation=generation,
        generations=told,
        evaluations=evaluations,
        proceed=proceed,
        reason=reason,
        interrupted=interrupted,
        device=device,
        twin=evaluator.twin,
        seconds=time.perf_counter() - started,
        evaluate_seconds=evaluate_s,
    )
