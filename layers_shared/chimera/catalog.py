"""The eight layers and the state machines, named once for the CDK app and the local run."""

from __future__ import annotations

from pathlib import Path

# (logical name used in ${<Name>FunctionArn}, package under functions/, what it does)
LAYERS: tuple[tuple[str, str, str], ...] = (
    ("Discovery", "discovery", "finds agent bundles and registers new or changed modules"),
    ("Planning", "planning", "turns the objective into work items"),
    ("Validation", "validation", "validates modules, genomes and plans; gates promotions"),
    ("Execution", "execution", "runs agents in the wasm sandbox; /predict"),
    ("Refinement", "refinement", "ingests KPIs, keeps rollups, runs experiments; reports"),
    ("MetaEvolution", "meta_evolution", "chooses the search and when to stop"),
    ("Evolution", "evolution", "ask/tell evolution, champions, promotion"),
    ("Resources", "resources", "prices placements and enforces the budget"),
)
STATE_MACHINES: tuple[str, ...] = (
    "optimization-cycle",
    "evolution-run",
    "evolution-segment",
    "canary-rollout",
    "predictor-training",
)
GPU_JOB = "segment"  # the Batch job: one segment of a run (gpu_jobs/segment)
STATEMACHINES_DIR = Path(__file__).resolve().parents[2] / "statemachines"


def asl_path(name: str) -> Path:
    return STATEMACHINES_DIR / f"{name}.asl.json"


def substitute(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    if "${" in text:
        start = text.index("${")
        raise KeyError(f"unsubstituted {text[start : text.index('}', start) + 1]}")
    return text


def logical_state_machine_name(name: str) -> str:
    return "".join(part.title() for part in name.split("-")) + "StateMachineArn"
