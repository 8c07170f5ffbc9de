"""What a SageMaker training container is given, read once: any entrypoint uses this module.

SageMaker runs the image with the job's files under `/opt/ml` (AWS documents the layout):

* `input/config/hyperparameters.json`: CreateTrainingJob's HyperParameters, a JSON object
  whose values are strings (the API takes only strings; at most 100 of them, keys of at most
  256 characters, values of at most 2,500). The sagemaker-training toolkit also exports them
  as `SM_HPS` (JSON, values decoded where they parse as JSON); the file wins when both exist,
  and a value from `SM_HPS` that is not a string is turned back into its JSON text, so an
  entrypoint always reads strings and converts them itself (`integer`, `string`).
* `input/config/resourceconfig.json`: `current_host` and `hosts` (`SM_CURRENT_HOST`,
  `SM_HOSTS`); `input/config/inputdataconfig.json`: the channels, whose data lie in
  `input/data/<channel>/` (`SM_CHANNELS`, `SM_CHANNEL_<NAME>`).
* `model/` (`SM_MODEL_DIR`): what the job leaves there SageMaker tars into
  `<OutputDataConfig.S3OutputPath>/<job>/output/model.tar.gz`; `output/data/`
  (`SM_OUTPUT_DATA_DIR`): into `output.tar.gz`.
* `output/failure`: a job that fails writes why here; SageMaker reports its first 1,024
  characters as DescribeTrainingJob's FailureReason. The exit status decides the job: 0 is
  Completed, anything else Failed.
* `checkpoints/` (CheckpointConfig.LocalPath, `/opt/ml/checkpoints` by default): synced to
  CheckpointConfig.S3Uri while the job runs and copied back before a managed-spot job
  restarts after an interruption, so a job resumes from what it left there.
* `SM_NUM_GPUS`: the GPUs the toolkit found (else counted from `/dev/nvidia<N>`).

Local runs (`chimera_local/training.py`) lay the same tree out elsewhere and name its root in
`CHIMERA_SM_ROOT` (the checkpoint dir in `CHIMERA_SM_CHECKPOINT_DIR` when LocalPath is not
the default); the `SM_*` variables, when set, win over paths derived from the root.

Bad input is a `ValidationFailedError` naming the field: `hyperparameters.<name>`, or the
file or variable that could not be read.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chimera.domain.errors import ValidationFailedError

DEFAULT_ROOT = Path("/opt/ml")
ROOT_ENV = "CHIMERA_SM_ROOT"
CHECKPOINT_ENV = "CHIMERA_SM_CHECKPOINT_DIR"
FAILURE_REASON_CHARS = 1024  # what DescribeTrainingJob's FailureReason shows of output/failure
MAX_HYPERPARAMETERS = 100
MAX_KEY_CHARS = 256
MAX_VALUE_CHARS = 2500


@dataclass(frozen=True)
class TrainingEnv:
    """One training container's view of its job."""

    root: Path
    hyperparameters: dict[str, str]
    model_dir: Path
    output_dir: Path
    output_data_dir: Path
    checkpoint_dir: Path
    channels: dict[str, Path] = field(default_factory=dict)
    current_host: str = "algo-1"
    hosts: tuple[str, ...] = ("algo-1",)
    num_gpus: int = 0

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    def string(self, name: str, default: str | None = None, *, pattern: str | None = None) -> str:
        """Hyperparameter `name` as given; missing without a default is an error naming it."""
        value = self.hyperparameters.get(name, default)
        if value is None:
            raise ValidationFailedError(f"hyperparameters.{name}", "is required")
        if pattern is not None and re.fullmatch(pattern, value) is None:
            raise ValidationFailedError(
                f"hyperparameters.{name}", f"{value!r} does not match {pattern}"
            )
        return value

    def integer(self, name: str, default: int | None = None, *, minimum: int | None = None) -> int:
        """Hyperparameter `name` as a whole number (SageMaker passes it as a string)."""
        raw = self.hyperparameters.get(name)
        if raw is None:
            if default is None:
                raise ValidationFailedError(f"hyperparameters.{name}", "is required")
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValidationFailedError(
                f"hyperparameters.{name}", f"{raw!r} is not a whole number"
            ) from None
        if minimum is not None and value < minimum:
            raise ValidationFailedError(f"hyperparameters.{name}", f"{value} is below {minimum}")
        return value

    def refuse_unknown(self, known: set[str]) -> None:
        """Refuse a hyperparameter no one reads (a typo would otherwise pass in silence). The
        SDK's own (`sagemaker_*`) are allowed."""
        for name in sorted(self.hyperparameters):
            if name not in known and not name.startswith("sagemaker_"):
                raise ValidationFailedError(
                    f"hyperparameters.{name}", f"is not one of {sorted(known)}"
                )

    def write_failure(self, message: str) -> None:
        """Record why the job failed where SageMaker reads its FailureReason."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.failure_file.write_text(message)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValidationFailedError(str(path), f"cannot be read as JSON: {exc}") from exc


def _env_json(environ: Mapping[str, str], name: str) -> Any:
    try:
        return json.loads(environ[name])
    except ValueError as exc:
        raise ValidationFailedError(name, f"is not JSON: {exc}") from exc


def _hyperparameters(config_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    path = config_dir / "hyperparameters.json"
    if path.exists():
        raw, where = _read_json(path), "hyperparameters"
    elif "SM_HPS" in environ:
        raw, where = _env_json(environ, "SM_HPS"), "SM_HPS"
    else:
        return {}
    if not isinstance(raw, dict):
        raise ValidationFailedError(where, "must be a JSON object of names to strings")
    if len(raw) > MAX_HYPERPARAMETERS:
        raise ValidationFailedError(where, f"has {len(raw)} entries; at most 100")
    values: dict[str, str] = {}
    for name, value in raw.items():
        if len(name) > MAX_KEY_CHARS:
            raise ValidationFailedError(f"hyperparameters.{name[:40]}...", "name over 256 chars")
        if not isinstance(value, str):
            if where == "hyperparameters":  # the API stores strings only: not SageMaker's file
                raise ValidationFailedError(
                    f"hyperparameters.{name}", f"must be a string, not {type(value).__name__}"
                )
            value = json.dumps(value)  # the toolkit decoded it; give back its text
        if len(value) > MAX_VALUE_CHARS:
            raise ValidationFailedError(f"hyperparameters.{name}", "value over 2500 characters")
        values[name] = value
    return values


def _channels(root: Path, config_dir: Path, environ: Mapping[str, str]) -> dict[str, Path]:
    if "SM_CHANNELS" in environ:
        names = _env_json(environ, "SM_CHANNELS")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValidationFailedError("SM_CHANNELS", "must be a JSON list of channel names")
    elif (config_dir / "inputdataconfig.json").exists():
        config = _read_json(config_dir / "inputdataconfig.json")
        if not isinstance(config, dict):
            raise ValidationFailedError("inputdataconfig.json", "must be a JSON object")
        names = list(config)
    else:
        names = []
    data = Path(environ.get("SM_INPUT_DIR", root / "input")) / "data"
    return {n: Path(environ.get(f"SM_CHANNEL_{n.upper()}", data / n)) for n in names}


def _gpus(environ: Mapping[str, str]) -> int:
    if "SM_NUM_GPUS" in environ:
        try:
            return max(0, int(environ["SM_NUM_GPUS"]))
        except ValueError:
            raise ValidationFailedError(
                "SM_NUM_GPUS", f"{environ['SM_NUM_GPUS']!r} is not a whole number"
            ) from None
    return sum(1 for p in Path("/dev").glob("nvidia*") if p.name[6:].isdigit())


def output_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where `failure` goes, readable even when the rest of the job's files are not."""
    env = os.environ if environ is None else environ
    return Path(env.get("SM_OUTPUT_DIR", Path(env.get(ROOT_ENV, DEFAULT_ROOT)) / "output"))


def load(environ: Mapping[str, str] | None = None) -> TrainingEnv:
    """The training job's environment: `/opt/ml` (or `CHIMERA_SM_ROOT`) and the SM_* variables."""
    env = os.environ if environ is None else environ
    root = Path(env.get(ROOT_ENV, DEFAULT_ROOT))
    config_dir = Path(env.get("SM_INPUT_CONFIG_DIR", root / "input" / "config"))
    resource: dict[str, Any] = {}
    if (config_dir / "resourceconfig.json").exists():
        loaded = _read_json(config_dir / "resourceconfig.json")
        if not isinstance(loaded, dict):
            raise ValidationFailedError("resourceconfig.json", "must be a JSON object")
        resource = loaded
    current_host = env.get("SM_CURRENT_HOST", str(resource.get("current_host", "algo-1")))
    hosts = _env_json(env, "SM_HOSTS") if "SM_HOSTS" in env else resource.get("hosts")
    if hosts is None:
        hosts = [current_host]
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ValidationFailedError("SM_HOSTS", "must be a JSON list of host names")
    output = output_dir(env)
    return TrainingEnv(
        root=root,
        hyperparameters=_hyperparameters(config_dir, env),
        model_dir=Path(env.get("SM_MODEL_DIR", root / "model")),
        output_dir=output,
        output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", output / "data")),
        checkpoint_dir=Path(env.get(CHECKPOINT_ENV, root / "checkpoints")),
        channels=_channels(root, config_dir, env),
        current_host=current_host,
        hosts=tuple(hosts),
        num_gpus=_gpus(env),
    )
