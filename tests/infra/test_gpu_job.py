"""The Batch job definition: its command is the segment entrypoint's, and it retries only when
the job was stopped from outside (the spot host went away, or SIGTERM: exit 143); a
deterministic failure would fail again: it exits at once."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match

from gpu_jobs.evaluate_population.definition import COMMAND, action_on_exit, command


def test_job_definition_retries_only_host_terminations(synthesized):
    synthesized.template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "ContainerProperties": Match.object_like({"Command": list(COMMAND)}),
            "RetryStrategy": {
                "Attempts": 5,
                "EvaluateOnExit": [
                    {"Action": "RETRY", "OnStatusReason": "Host EC2*"},
                    {"Action": "RETRY", "OnExitCode": "143"},
                    {"Action": "EXIT", "OnReason": "*"},
                ],
            },
        },
    )


@pytest.mark.parametrize(
    ("exit_code", "status_reason", "reason", "action"),
    [
        # a reclaimed spot instance: the host went away, the job may well pass elsewhere
        (None, "Host EC2 (instance i-0123456789abcdef0) terminated.", None, "RETRY"),
        # the entrypoint failed (exit 1) or was killed for memory (137): the same again
        (1, "Essential container in task exited", None, "EXIT"),
        (137, "Essential container in task exited", "OutOfMemoryError: Container killed", "EXIT"),
        (None, "Task failed to start", "CannotPullContainerError: pull access denied", "EXIT"),
    ],
)
def test_batch_reading_of_the_retry_strategy(exit_code, status_reason, reason, action):
    assert action_on_exit(exit_code=exit_code, status_reason=status_reason, reason=reason) == (
        action
    )


def test_the_command_gets_the_segment_as_batch_substitutes_it():
    parameters = {"run_id": "cycle-1.cartpole", "execution_id": "cycle-1", "last_generation": "9"}
    assert command(parameters)[3:] == [
        "--run-id",
        "cycle-1.cartpole",
        "--execution-id",
        "cycle-1",
        "--last-generation",
        "9",
    ]
