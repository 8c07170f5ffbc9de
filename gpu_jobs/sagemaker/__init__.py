"""SageMaker training-job placement: the conventions any entrypoint reads (`conventions`) and
the training program SageMaker runs (`python -m gpu_jobs.sagemaker.train`).

This module imports nothing heavy: the local stand-in (`chimera_local/training.py`) and the
CLI launcher read the command from here.
"""

from __future__ import annotations

# The training image's entrypoint. SageMaker starts the container as `<entrypoint> train`.
ENTRYPOINT = ("python", "-m", "gpu_jobs.sagemaker.train")
JOBS = ("segment", "predictor")  # what hyperparameter `job` may name; `segment` by default
