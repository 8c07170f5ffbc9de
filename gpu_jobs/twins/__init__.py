"""Torch twins: batched tensor forms of agent policy families, checked against the WASM module
before use, and CartPole-v1 in torch, so that GPU jobs can evaluate whole populations.

torch is imported here and in `gpu_jobs/` only, never by the Lambda layer
(`layers_shared/chimera`). Install with the `gpu` extra (`pip install -e '.[gpu]'`).
"""

from gpu_jobs.twins.cartpole import TorchCartPole, single_reset_states, vector_reset_states
from gpu_jobs.twins.check import (
    RTOL,
    CheckedTwin,
    TwinMismatchError,
    check_agent,
    check_twin,
)
from gpu_jobs.twins.evaluate import evaluate_population_torch
from gpu_jobs.twins.policies import NoTwinError, Twin, TwinPolicy, twin_for

__all__ = [
    "RTOL",
    "CheckedTwin",
    "NoTwinError",
    "TorchCartPole",
    "Twin",
    "TwinMismatchError",
    "TwinPolicy",
    "check_agent",
    "check_twin",
    "evaluate_population_torch",
    "single_reset_states",
    "twin_for",
    "vector_reset_states",
]
