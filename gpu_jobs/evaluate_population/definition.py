"""The job definition's command and retry strategy, and AWS Batch's reading of them.

This module imports nothing heavy: the CDK construct (`infra_cdk/constructs/gpu.py`) and the
local job runner (`chimera_local/workflows.py`) both read it.

The job runs one segment of an evolution run (`gpu_jobs/segment/entrypoint.py`): many
generations, each told generation a checkpoint in the store. Its parameters are the run, the
execution that drives it and the segment's last generation, strings as Batch substitutes
`Ref::name` in the command.

Retries. The job is deterministic: a job that failed on its own (exit 1, or 3: a twin
refused) would fail the same way again, so it exits. It is retried when it was stopped from
outside, and resumes from its last tell:
* the host went away (a reclaimed spot instance: status reason "Host EC2 (instance i-...)
  terminated.");
* the job exited 143: it got SIGTERM (ECS's stop signal, sent when Batch stops the job, a
  spot reclaim included) and stopped between generations, or was killed by it.
An out-of-memory kill (137) is not retried: the same job would run out again.
`infra_cdk/constructs/gpu.py` deploys `RETRY_STRATEGY`; the local job runner
(`chimera_local/workflows.py`) evaluates it with `action_on_exit`, as Batch would.
"""

from __future__ import annotations

from typing import Literal

Action = Literal["RETRY", "EXIT"]

# Batch substitutes `Ref::name` with the SubmitJob parameter `name`.
COMMAND = (
    "python",
    "-m",
    "gpu_jobs.segment.entrypoint",
    "--run-id",
    "Ref::run_id",
    "--execution-id",
    "Ref::execution_id",
    "--last-generation",
    "Ref::last_generation",
)
PARAMETERS = ("run_id", "execution_id", "last_generation")

# The entrypoint's exit after SIGTERM (gpu_jobs.segment.entrypoint.EXIT_SIGTERM: 128 + 15).
SIGTERM_EXIT_CODE = 143
# Spot reclaims come in bursts: room for a few before the segment fails.
ATTEMPTS = 5
# Batch's EvaluateOnExit: the first entry whose conditions all match decides; a pattern may
# end in "*" (a prefix match); when no entry matches, Batch retries.
EVALUATE_ON_EXIT: tuple[dict[str, str], ...] = (
    {"Action": "RETRY", "OnStatusReason": "Host EC2*"},
    {"Action": "RETRY", "OnExitCode": str(SIGTERM_EXIT_CODE)},
    {"Action": "EXIT", "OnReason": "*"},
)
RETRY_STRATEGY = {"Attempts": ATTEMPTS, "EvaluateOnExit": list(EVALUATE_ON_EXIT)}

_CONDITIONS = {"OnStatusReason": "status_reason", "OnReason": "reason", "OnExitCode": "exit_code"}


def command(parameters: dict[str, str]) -> list[str]:
    """COMMAND with its `Ref::` placeholders substituted, as Batch does at submission."""
    return [
        str(parameters.get(arg[5:], arg)) if arg.startswith("Ref::") else arg for arg in COMMAND
    ]


def _glob(pattern: str, value: str | None) -> bool:
    if value is None:
        return pattern == "*"
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def action_on_exit(
    *, exit_code: int | None, status_reason: str | None, reason: str | None = None
) -> Action:
    """What Batch does with a failed attempt under EVALUATE_ON_EXIT."""
    values = {
        "status_reason": status_reason,
        "reason": reason,
        "exit_code": None if exit_code is None else str(exit_code),
    }
    for entry in EVALUATE_ON_EXIT:
        conditions = {k: v for k, v in entry.items() if k in _CONDITIONS}
        if all(_glob(pattern, values[_CONDITIONS[k]]) for k, pattern in conditions.items()):
            return "RETRY" if entry["Action"] == "RETRY" else "EXIT"
    return "RETRY"
