"""How long the predictor's training takes per row and epoch: the figure layer 8 prices a
predictor-training job's expected duration from (`resources.TRAINING_S_PER_ROW_EPOCH`).

A synthetic history (CartPole-shaped: 5 genes, a fitness, a run id per 80 rows, generation as
context) of each size in `--rows` is trained by `gpu_jobs.predictor.train.fit` for `--epochs`
epochs with the trainer's default network (64,64 tanh, Adam, batch 64, a validation tenth
checked every epoch) and, separately, with batch size 16 (more optimizer steps per row). Each
size's time is the best of `--repeat` runs (this machine is shared). Printed: rows, epochs,
batch size, seconds, and seconds per row-epoch. torch's import and the data set's load are
not in it (a job's start-up: layer 8 prices those in the table's start-up figure).

Run: .venv/bin/python bench/training_time_bench.py [--rows 480 4800] [--epochs 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gpu_jobs.predictor.dataset import Dataset
from gpu_jobs.predictor.train import fit


def _dataset(rows: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    genes = rng.normal(size=(rows, 5))
    fitness = 500 * np.tanh(genes @ np.array([0.5, -0.3, 0.8, 0.1, 0.2])) ** 2
    return Dataset(
        agent_id="bench",
        suite="cartpole-v1",
        genes=genes,
        generation=np.arange(rows, dtype=float) % 20,
        targets=fitness[:, None],
        target_names=("fitness",),
        run_ids=tuple(f"run-{i // 80}" for i in range(rows)),
        gene_names=tuple(f"g{i}" for i in range(5)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[480, 4800])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core: the machine is shared; an instance has more
    print(f"torch {torch.__version__}, 1 thread, best of {args.repeat}")
    print(f"{'rows':>7} {'epochs':>6} {'batch':>5} {'seconds':>8} {'s/row-epoch':>12}")
    worst = 0.0
    for rows in args.rows:
        data = _dataset(rows)
        for batch in (64, 16):
            hyper = {"epochs": args.epochs, "batch_size": batch, "device": "cpu"}
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                fit(data, hyper)
                best = min(best, time.perf_counter() - start)
            per = best / (rows * args.epochs)
            worst = max(worst, per)
            print(f"{rows:>7} {args.epochs:>6} {batch:>5} {best:>8.2f} {per:>12.2e}")
    print(f"worst s/row-epoch: {worst:.2e}")


if __name__ == "__main__":
    main()
