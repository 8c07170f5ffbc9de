"""AWS Batch job: one segment of an evolution run, many generations, in one container.

    python -m gpu_jobs.segment.entrypoint --run-id RUN --execution-id EXECUTION \\
        --last-generation N [--device auto|cpu|cuda]

The job definition passes the three as Batch parameters (`Ref::run_id`, `Ref::execution_id`,
`Ref::last_generation`: strings, as Batch substitutes them). It runs
`gpu_jobs.segment.job.run_segment`: ask, evaluate (the agent's torch twin on the device when it
declares one, checked first; the WASM sandbox otherwise), tell, adapt, generation after
generation, every tell a checkpoint in the store. Settings come from the environment
(CHIMERA_* as for the Lambdas, CHIMERA_SHARD_SIZE included: the shard layout decides the
episodes; AWS_BATCH_JOB_ID and AWS_BATCH_JOB_ATTEMPT name the job in its summary).

On SIGTERM (what ECS sends when Batch stops the job, a spot reclaim included, before SIGKILL
after the stop timeout) the job finishes the generation it is in, up to its tell, and exits
143. The job definition retries 143, and the next attempt resumes from the last tell; a
SIGKILL at any moment resumes the same way (see job.py).

Prints one JSON line (the job, the attempt, the run, generations told, evaluations, seconds
measured, device, twin) and exits:

    0    the segment ended: its last generation told, or adapt said stop
    143  stopped between generations after SIGTERM (retried: resumes)
    3    the twin disagrees with the agent's module: refused, nothing evaluated (not retried)
    2    bad arguments (argparse names the argument)
    1    anything else: the store unreachable, the run unknown or driven by another
         execution, a host error (traceback on stderr; not retried)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import types

from chimera.runtime import deps

from gpu_jobs.segment.job import DEVICES, run_segment
from gpu_jobs.twins import TwinMismatchError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TWIN_REFUSED = 3
EXIT_SIGTERM = 143  # 128 + SIGTERM, what a container killed by SIGTERM exits with too


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gpu_jobs.segment.entrypoint",
        description=(__doc__ or "").splitlines()[0],
    )
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--execution-id", required=True)
    parser.add_argument(
        "--last-generation", required=True, type=int, help="the last generation to tell"
    )
    parser.add_argument("--device", choices=DEVICES, default="auto")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.last_generation < 0:
        print(f"--last-generation: {args.last_generation} is negative", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()

    def on_sigterm(signum: int, frame: types.FrameType | None) -> None:
        print("SIGTERM: stopping after this generation's tell", file=sys.stderr, flush=True)
        stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        outcome = run_segment(
            args.run_id,
            args.execution_id,
            args.last_generation,
            deps(),
            device=args.device,
            stop=stop,
        )
    except TwinMismatchError as exc:
        print(f"run {args.run_id}: {exc}", file=sys.stderr, flush=True)
        return EXIT_TWIN_REFUSED
    summary = {
        "job": os.environ.get("AWS_BATCH_JOB_ID", "local"),
        "attempt": int(os.environ.get("AWS_BATCH_JOB_ATTEMPT", "1")),
        **outcome.summary(),
    }
    print(json.dumps(summary), flush=True)
    return EXIT_SIGTERM if outcome.interrupted else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
