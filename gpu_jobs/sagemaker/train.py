"""The SageMaker training program: `python -m gpu_jobs.sagemaker.train [train]`.

SageMaker starts the training image as `<entrypoint> train`; this reads the job from the
conventions (`conventions.load`: hyperparameters, model, output and checkpoint dirs) and runs
the job that hyperparameter `job` names:

* `segment` (the default): a whole segment of an evolution run (`gpu_jobs.segment`), from
  hyperparameters `run_id`, `execution_id` and `last_generation` (strings, as SageMaker passes
  every hyperparameter). The segment restores from the store and checkpoints there after
  every generation, so it resumes by itself; the checkpoint dir (synced to
  CheckpointConfig.S3Uri, copied back when a managed-spot job restarts) holds
  `progress.json`: the job's hyperparameters, its attempts, and, once done, its result, so an
  attempt that starts after the work was finished does not run it again, and a checkpoint
  left by a different job under the same S3 URI is refused.
* `predictor`: the performance predictor (`gpu_jobs.predictor.train`) on the `training`
  channel (the agent's history as JSON lines, `gpu_jobs/predictor/dataset.py`), with the
  trainer's hyperparameters (`hidden`, `epochs`, ...: strings; an unknown one is refused
  naming it; `device` defaults to cuda when the job has a GPU). It trains into
  `<checkpoint dir>/predictor/` and copies `model.json` and `metrics.json` into the model dir,
  also on an attempt that finds the training done, so model.tar.gz always holds them. A
  missing or empty channel is `channels.training`. Training is short and not resumable: an
  interrupted attempt trains again from the start (the same seed: the same model).

On success the job's summary goes to `<model dir>/summary.json` (SageMaker tars the model dir
into model.tar.gz) and the exit status is 0 (Completed). On failure the reason goes to
`<output>/failure`, which SageMaker shows as FailureReason, and the status is non-zero
(Failed): 2 for bad input (a ValidationFailedError naming the field), 1 for anything else.
SIGTERM (a spot interruption or StopTrainingJob) asks the job to stop after its current
generation; a job stopped before its end exits 143 with no summary, to be resumed.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from chimera.domain.errors import ValidationFailedError
from pydantic import BaseModel

from gpu_jobs.sagemaker import JOBS, conventions
from gpu_jobs.sagemaker.conventions import TrainingEnv

PROGRESS_FILE = "progress.json"
SUMMARY_FILE = "summary.json"
EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 143
# Run and execution ids as the store names them: no path separators, no whitespace.
_ID = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"

# A job: (its result, whether it ran to its end) — not to its end when SIGTERM stopped it.
Job = Callable[[TrainingEnv, threading.Event], tuple[Any, bool]]


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json.loads(json.dumps(dataclasses.asdict(value), default=str))
    return json.loads(json.dumps(value, default=str))


def _segment(env: TrainingEnv, stop: threading.Event) -> tuple[Any, bool]:
    env.refuse_unknown({"job", "run_id", "execution_id", "last_generation"})
    run_id = env.string("run_id", pattern=_ID)
    execution_id = env.string("execution_id", pattern=_ID)
    last_generation = env.integer("last_generation", minimum=0)
    from chimera.runtime import deps

    from gpu_jobs.segment.job import run_segment

    device = "cuda" if env.num_gpus > 0 else "cpu"
    outcome = run_segment(run_id, execution_id, last_generation, deps(), device=device, stop=stop)
    return outcome.summary(), not outcome.interrupted


PREDICTOR_DIR = "predictor"  # under the checkpoint dir: the trained model, kept across attempts


def _predictor(env: TrainingEnv, stop: threading.Event) -> tuple[Any, bool]:
    from gpu_jobs.predictor import train as predictor

    env.refuse_unknown({"job", *predictor.DEFAULTS})
    channel = env.channels.get("training")
    if channel is None:
        raise ValidationFailedError(
            "channels.training", f"missing: the job's channels are {sorted(env.channels)}"
        )
    if not channel.is_dir() or not any(p.is_file() for p in channel.rglob("*.jsonl")):
        raise ValidationFailedError("channels.training", f"no *.jsonl data under {channel}")
    hyper: dict[str, Any] = {k: v for k, v in env.hyperparameters.items() if k != "job"}
    hyper.setdefault("device", "cuda" if env.num_gpus > 0 else "cpu")
    metrics = predictor.train(channel, env.checkpoint_dir / PREDICTOR_DIR, hyper)
    return metrics, True


def _predictor_outputs(env: TrainingEnv) -> None:
    """The trained model into the model dir (SageMaker tars it into model.tar.gz)."""
    from gpu_jobs.predictor import train as predictor

    trained = env.checkpoint_dir / PREDICTOR_DIR
    env.model_dir.mkdir(parents=True, exist_ok=True)
    for name in (predictor.MODEL_FILE, predictor.METRICS_FILE):
        (env.model_dir / name).write_bytes((trained / name).read_bytes())


_RUNNERS: dict[str, Job] = {"segment": _segment, "predictor": _predictor}
# What a job leaves in the model dir besides summary.json, from what its checkpoint dir holds.
_OUTPUTS: dict[str, Callable[[TrainingEnv], None]] = {"predictor": _predictor_outputs}


def _progress(env: TrainingEnv) -> dict[str, Any]:
    path = env.checkpoint_dir / PROGRESS_FILE
    if not path.exists():
        return {"hyperparameters": env.hyperparameters, "attempts": 0}
    progress = json.loads(path.read_text())
    if progress.get("hyperparameters") != env.hyperparameters:
        raise ValidationFailedError(
            "CheckpointConfig.S3Uri",
            f"holds the checkpoint of another job ({progress.get('hyperparameters')}); "
            "give each job its own checkpoint URI",
        )
    return dict(progress)


def _save(env: TrainingEnv, name: str, data: dict[str, Any]) -> None:
    env.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tmp = env.checkpoint_dir / f".{name}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(env.checkpoint_dir / name)  # a kill leaves the old file or the new, never half


def run(env: TrainingEnv, stop: threading.Event) -> dict[str, Any] | None:
    """Run the job the hyperparameters name; its summary, or None when stopped before its end."""
    job = env.string("job", "segment")
    if job not in _RUNNERS:
        raise ValidationFailedError("hyperparameters.job", f"{job!r} is not one of {list(JOBS)}")
    progress = _progress(env)
    progress["attempts"] = int(progress.get("attempts", 0)) + 1
    _save(env, PROGRESS_FILE, progress)
    if "result" not in progress:
        result, complete = _RUNNERS[job](env, stop)
        if not complete:
            return None
        progress["result"] = _jsonable(result)
        _save(env, PROGRESS_FILE, progress)
    if job in _OUTPUTS:
        _OUTPUTS[job](env)
    summary = {
        "job": job,
        "hyperparameters": env.hyperparameters,
        "host": env.current_host,
        "device": "cuda" if env.num_gpus > 0 else "cpu",
        "attempts": progress["attempts"],
        "result": progress["result"],
    }
    env.model_dir.mkdir(parents=True, exist_ok=True)
    (env.model_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _fail(output_dir: Path, message: str, code: int) -> int:
    print(message, file=sys.stderr, flush=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "failure").write_text(message[: conventions.FAILURE_REASON_CHARS])
    return code


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["train"]:  # SageMaker's container argument
        args = args[1:]
    try:
        env = conventions.load(environ)
    except ValidationFailedError as exc:
        return _fail(conventions.output_dir(environ), f"ValidationFailedError: {exc}", 2)
    if args:
        return _fail(env.output_dir, f"unexpected arguments {args}: only 'train' is accepted", 2)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        summary = run(env, stop)
    except ValidationFailedError as exc:
        return _fail(env.output_dir, f"ValidationFailedError: {exc}", EXIT_BAD_INPUT)
    except Exception as exc:  # noqa: BLE001 - every failure is the job's FailureReason
        traceback.print_exc()
        return _fail(env.output_dir, f"{type(exc).__name__}: {exc}", EXIT_ERROR)
    if summary is None:
        print("stopped (SIGTERM) before the end; resumes from the checkpoint", flush=True)
        return EXIT_STOPPED
    print(json.dumps(summary, sort_keys=True), flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
