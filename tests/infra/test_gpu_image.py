"""The segment job's image (gpu_jobs/evaluate_population/Dockerfile), read as Docker reads it.

No Docker engine here: the image is not built. What is checked is the Dockerfile's effect on
the file system and the user, instruction by instruction: the job runs as `chimera`, not root,
and every directory the SageMaker training program uses under SageMaker's defaults (its
conventions with no SM_* variables set, and the checkpoint LocalPath the state machines ask
for) exists in the image and belongs to chimera before the USER switch. Whether SageMaker
mounts a root-owned volume over them is not knowable here (see the Dockerfile's comment).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path, PurePosixPath

import pytest

from gpu_jobs.sagemaker import conventions

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "gpu_jobs" / "evaluate_population" / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def image_state(text: str) -> tuple[str, dict[PurePosixPath, str]]:
    """The final USER, and the owner of each directory the RUN instructions create (mkdir -p,
    then chown -R, each applied as the shell would, in order). Users other than root are
    only ever given by name here."""
    user = "root"
    owners: dict[PurePosixPath, str] = {}
    for keyword, args in instructions(text):
        if keyword == "USER":
            user = args
        if keyword != "RUN":
            continue
        for command in args.split("&&"):
            words = shlex.split(command)
            if words[:2] == ["mkdir", "-p"]:
                for d in map(PurePosixPath, words[2:]):
                    for p in (d, *d.parents):
                        owners.setdefault(p, user)
            elif words[:2] == ["chown", "-R"]:
                owner = words[2].split(":")[0]
                for top in map(PurePosixPath, words[3:]):
                    for p in list(owners):
                        if p == top or top in p.parents:
                            owners[p] = owner
    return user, owners


def sagemaker_dirs() -> list[PurePosixPath]:
    """Where the training program reads and writes under SageMaker's defaults."""
    env = conventions.load({})
    dirs = [env.model_dir, env.output_dir, env.output_data_dir, env.checkpoint_dir]
    dirs += [env.root / "input" / "config", env.root / "input" / "data"]
    for name in ("evolution-run", "predictor-training"):
        asl = json.loads((REPO / "statemachines" / f"{name}.asl.json").read_text())
        dirs += [PurePosixPath(p) for p in _local_paths(asl)]
    return sorted({PurePosixPath(d) for d in dirs})


def _local_paths(node: object) -> list[str]:
    """Every CheckpointConfig.LocalPath in a state machine definition."""
    if isinstance(node, dict):
        found = [node["LocalPath"]] if "S3Uri" in node and "LocalPath" in node else []
        return found + [p for v in node.values() for p in _local_paths(v)]
    if isinstance(node, list):
        return [p for v in node for p in _local_paths(v)]
    return []


def test_the_job_runs_as_chimera():
    user, _ = image_state(DOCKERFILE.read_text())
    assert user == "chimera"


@pytest.mark.parametrize("directory", sagemaker_dirs(), ids=str)
def test_each_sagemaker_directory_is_prepared_for_chimera(directory):
    _, owners = image_state(DOCKERFILE.read_text())
    assert owners.get(directory) == "chimera", f"{directory}: not created and owned by chimera"


def test_the_reading_catches_a_directory_left_to_root():
    text = DOCKERFILE.read_text().replace("chown -R chimera:chimera /opt/ml", "true")
    _, owners = image_state(text)
    assert owners[PurePosixPath("/opt/ml/model")] == "root"
