"""AWS Batch job: evaluate a run's asked generation in one container.

Large populations go here instead of a Lambda Map. The job reads the generation from the store,
evaluates every candidate in the sandbox over the vectorized suite, and writes the fitnesses
back as one shard; the state machine's tell step picks them up. Settings come from the
environment (CHIMERA_* as for the Lambdas; AWS_BATCH_JOB_ID names the job in logs).

Exit status, as the Lambda path's task status: a guest that traps, runs out of fuel or
breaks the ABI is a failed fitness with its reason (the same `evaluate_shard` the Lambda
path runs), and the job succeeds (0). Anything else (the store is unreachable, the run is
unknown, the host code raised) is a failed job (1, traceback on stderr); a run with no
generation waiting is a failed job too (2). batch:submitJob.sync turns a failed job into
States.TaskFailed, which the segment catches and records on the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from chimera.runtime import deps
from chimera.services import execution
from chimera.services.contracts import EvaluateShardRequest, EvaluateShardResult
from chimera.services.deps import Deps


def evaluate_population(run_id: str, ports: Deps) -> EvaluateShardResult | None:
    """The whole asked generation as shard 0; None when no generation is waiting."""
    run = ports.store.get_run(run_id)
    if run.asked_generation is None:
        return None
    size = len(ports.store.get_generation(run.run_id, run.asked_generation).individuals)
    return execution.evaluate_shard(
        EvaluateShardRequest(
            run_id=run.run_id, generation=run.asked_generation, shard=0, start=0, stop=size
        ),
        ports,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)
    result = evaluate_population(args.run_id, deps())
    if result is None:
        print(f"run {args.run_id}: no generation is waiting for evaluation", file=sys.stderr)
        return 2
    job = os.environ.get("AWS_BATCH_JOB_ID", "local")
    print(json.dumps({"job": job, **result.model_dump()}), flush=True)
    if result.failed is not None:
        print(f"run {args.run_id}: guest failed ({result.failed}); fitness recorded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
