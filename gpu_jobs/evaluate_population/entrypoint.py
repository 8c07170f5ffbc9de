"""AWS Batch job: evaluate a run's asked generation in one container.

Large populations go here instead of a Lambda Map. The job reads the generation from the store,
evaluates every candidate in the sandbox over the vectorized suite, and writes the fitnesses
back as one shard; the state machine's tell step picks them up. Settings come from the
environment (CHIMERA_* as for the Lambdas; AWS_BATCH_JOB_ID names the job in logs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from chimera.runtime import deps
from chimera.services import execution
from chimera.services.contracts import EvaluateShardRequest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)
    ports = deps()
    run = ports.store.get_run(args.run_id)
    if run.asked_generation is None:
        print(f"run {run.run_id}: no generation is waiting for evaluation", file=sys.stderr)
        return 2
    size = len(ports.store.get_generation(run.run_id, run.asked_generation).individuals)
    result = execution.evaluate_shard(
        EvaluateShardRequest(
            run_id=run.run_id,
            generation=run.asked_generation,
            shard=0,
            start=0,
            stop=size,
        ),
        ports,
    )
    print(json.dumps({"job": os.environ.get("AWS_BATCH_JOB_ID", "local"), **result.model_dump()}))
    return 0 if result.failed is None else 1


if __name__ == "__main__":
    sys.exit(main())
