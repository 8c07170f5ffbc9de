"""The AWS Batch job that runs one segment of an evolution run (many generations) in one
container: `job.run_segment` is the loop, `entrypoint` the command the job definition runs
(`gpu_jobs/evaluate_population/definition.py`). Imports torch: not for the Lambda layer."""
