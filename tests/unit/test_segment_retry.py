"""The segment job's definition as AWS Batch reads it: a job stopped from outside (its spot
host reclaimed, or SIGTERM: the entrypoint's exit 143) is retried and resumes from its last
tell; a job that failed on its own (exit 1, a twin refused: 3, bad arguments: 2, out of
memory: 137, an image that cannot be pulled) exits, since it would fail the same way again."""

from __future__ import annotations

import pytest

from gpu_jobs.evaluate_population import definition
from gpu_jobs.segment import entrypoint

EXITED = "Essential container in task exited"


@pytest.mark.parametrize(
    ("exit_code", "status_reason", "reason", "action"),
    [
        (None, "Host EC2 (instance i-0123456789abcdef0) terminated.", None, "RETRY"),
        (entrypoint.EXIT_SIGTERM, EXITED, None, "RETRY"),
        (entrypoint.EXIT_FAILED, EXITED, None, "EXIT"),
        (entrypoint.EXIT_TWIN_REFUSED, EXITED, None, "EXIT"),
        (entrypoint.EXIT_USAGE, EXITED, None, "EXIT"),
        (137, EXITED, "OutOfMemoryError: Container killed due to memory usage", "EXIT"),
        (None, "Task failed to start", "CannotPullContainerError: pull access denied", "EXIT"),
    ],
)
def test_batch_retries_only_a_job_stopped_from_outside(exit_code, status_reason, reason, action):
    assert (
        definition.action_on_exit(exit_code=exit_code, status_reason=status_reason, reason=reason)
        == action
    )


def test_the_retried_exit_code_is_the_entrypoints_and_a_sigterm_kill():
    assert definition.SIGTERM_EXIT_CODE == entrypoint.EXIT_SIGTERM == 128 + 15
    assert definition.RETRY_STRATEGY["Attempts"] == definition.ATTEMPTS > 1


def test_the_command_is_the_segment_entrypoint_with_batchs_parameters():
    argv = definition.command(
        {"run_id": "c-1.cartpole", "execution_id": "c-1", "last_generation": "49"}
    )
    assert argv[:3] == ["python", "-m", "gpu_jobs.segment.entrypoint"]
    args = entrypoint._parser().parse_args(argv[3:])
    assert (args.run_id, args.execution_id, args.last_generation) == ("c-1.cartpole", "c-1", 49)
    assert args.device == "auto"
    assert set(definition.PARAMETERS) == {
        arg[5:] for arg in definition.COMMAND if arg.startswith("Ref::")
    }
