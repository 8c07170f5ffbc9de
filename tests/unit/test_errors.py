"""One error taxonomy: HTTP statuses and ASL error names come from the same table."""

from __future__ import annotations

import json

import pytest
from chimera.catalog import STATE_MACHINES, asl_path
from chimera.domain import errors
from chimera.domain.errors import LAMBDA_TRANSIENT_ERRORS, RETRYABLE_ERRORS, TAXONOMY


def _tasks(states: dict, path: str = ""):
    for name, state in states.items():
        if state["Type"] == "Task":
            yield f"{path}{name}", state
        for sub in ("Iterator", "ItemProcessor"):
            if sub in state:
                yield from _tasks(state[sub]["States"], f"{path}{name}/")
        for i, branch in enumerate(state.get("Branches", [])):
            yield from _tasks(branch["States"], f"{path}{name}[{i}]/")


def test_every_chimera_error_class_is_mapped():
    declared = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.ChimeraError)
    } - {errors.ChimeraError}
    assert declared == set(TAXONOMY)
    assert RETRYABLE_ERRORS == ("UnavailableError",)


@pytest.mark.parametrize("machine", STATE_MACHINES)
def test_every_task_retries_the_retryable_and_catches_the_rest(machine):
    definition = json.loads(asl_path(machine).read_text())
    for name, task in _tasks(definition["States"]):
        retried = {e for rule in task.get("Retry", []) for e in rule["ErrorEquals"]}
        if task["Resource"].startswith("arn:aws:states:::"):
            continue  # service integrations: their own error names (checked in the file)
        assert set(RETRYABLE_ERRORS) | set(LAMBDA_TRANSIENT_ERRORS) <= retried, name
        terminal = {cls.__name__ for cls, kind in TAXONOMY.items() if not kind.retryable}
        assert not retried & terminal, f"{name} retries a terminal error"
        inside_map = "/" in name
        if not inside_map and name not in ("RecordFailure", "FailedBeforeRun", "Abort"):
            caught = {e for c in task.get("Catch", []) for e in c["ErrorEquals"]}
            assert "States.ALL" in caught, f"{name} has no Catch"


def test_kind_of_maps_instances():
    assert errors.kind_of(errors.NotFoundError("agent", "x")).http_status == 404
    assert errors.kind_of(errors.UnavailableError("throttled")).retryable
    assert errors.kind_of(ValueError()) is None
