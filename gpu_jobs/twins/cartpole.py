"""CartPole-v1 in torch, batched: gymnasium's physics, step for step, for many episodes at once.

The same constants and the same operations in the same order as gymnasium 1.x's
`CartPoleEnv` / `CartPoleVectorEnv` (Euler integration, force 10, tau 0.02, failure past 12
degrees or 2.4, truncation at 500 steps), the state kept in float64 as gymnasium keeps it and
handed to the policy as float32 as gymnasium hands it. Initial states are drawn exactly as
gymnasium draws them (`seeding.np_random(seed)`, uniform in [-0.05, 0.05)), on the host with
numpy, then moved to the device: the same seed gives the same episodes on either path.

Exactness: torch's float64 sin and cos differ from numpy's in the last bit for about 0.2 % of
arguments, and an upright pole is unstable (a difference grows about e^(4.4 t)), so with
torch's a long episode can end a step earlier or later than gymnasium's. On the CPU the twin
therefore takes sin and cos from numpy (the tensor's own memory handed to np.sin / np.cos, the
result wrapped back without a copy): the CPU twin is bit for bit gymnasium's and the WASM
path's. On CUDA it keeps torch's (a round trip to the host every step would cost more than the
step): the GPU twin's returns may differ from the WASM path's for a few long episodes, which
is acceptable because nothing promotes on the twin's word: the champion is re-scored in the
WASM sandbox (hold-out, canary).

Pure tensor code: no I/O, no environment. torch lives here and in `gpu_jobs/`, never in the
Lambda layer (`layers_shared/chimera`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

GRAVITY = 9.8
MASSCART = 1.0
MASSPOLE = 0.1
TOTAL_MASS = MASSPOLE + MASSCART
LENGTH = 0.5  # half the pole's length
POLEMASS_LENGTH = MASSPOLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4
MAX_EPISODE_STEPS = 500
RESET_LOW, RESET_HIGH = -0.05, 0.05


def vector_reset_states(seed: int, n: int) -> np.ndarray:
    """The (n, 4) float64 states `CartPoleVectorEnv(num_envs=n).reset(seed=seed)` starts from:
    one draw of shape (4, n) from gymnasium's generator, so episode j is column j."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    return np.ascontiguousarray(rng.uniform(RESET_LOW, RESET_HIGH, size=(4, n)).T)


def single_reset_states(seeds: Sequence[int]) -> np.ndarray:
    """The (len(seeds), 4) float64 states `gymnasium.make("CartPole-v1").reset(seed=s)` gives."""
    rows = [
        np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(s)))).uniform(
            RESET_LOW, RESET_HIGH, size=(4,)
        )
        for s in seeds
    ]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), 4)


def sin_cos(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sin and cos of a float64 tensor: numpy's on the CPU (bit for bit what gymnasium
    computes), torch's elsewhere (within one unit in the last place of numpy's)."""
    if theta.device.type != "cpu":
        return torch.sin(theta), torch.cos(theta)
    host = theta.detach().numpy()  # a view of the tensor's memory, not a copy
    return torch.from_numpy(np.sin(host)), torch.from_numpy(np.cos(host))


def physics_step(
    x: torch.Tensor,
    x_dot: torch.Tensor,
    theta: torch.Tensor,
    theta_dot: torch.Tensor,
    push_right: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Euler step of every cart: each state component a float64 tensor, push_right bool.

    Returns the next (x, x_dot, theta, theta_dot) and whether each episode terminated (cart
    past 2.4 or pole past 12 degrees). The arithmetic is gymnasium's, operation for
    operation (sin and cos numpy's on the CPU, torch's on other devices: see `sin_cos`).
    """
    force = (push_right.to(x.dtype) * 2.0 - 1.0) * FORCE_MAG  # exactly +-10, as np.sign gives
    sintheta, costheta = sin_cos(theta)
    temp = (force + POLEMASS_LENGTH * torch.square(theta_dot) * sintheta) / TOTAL_MASS
    thetaacc = (GRAVITY * sintheta - costheta * temp) / (
        LENGTH * (4.0 / 3.0 - MASSPOLE * torch.square(costheta) / TOTAL_MASS)
    )
    xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
    x = x + TAU * x_dot
    x_dot = x_dot + TAU * xacc
    theta = theta + TAU * theta_dot
    theta_dot = theta_dot + TAU * thetaacc
    # |v| > t is (v < -t) | (v > t), NaN included (false either way).
    terminated = (x.abs() > X_THRESHOLD) | (theta.abs() > THETA_THRESHOLD)
    return x, x_dot, theta, theta_dot, terminated


class TorchCartPole:
    """n CartPole-v1 episodes started together and stepped together, with no auto-reset.

    `alive` says which episodes still run; `step` returns this step's reward (1 for each
    episode that was running), terminated and truncated, as gymnasium's step does for a
    running episode. A finished episode's state keeps being integrated (cheaper than
    masking it) but means nothing: read states and observations of running episodes only.
    """

    def __init__(self, initial: np.ndarray | torch.Tensor, device: str | torch.device = "cpu"):
        state = torch.as_tensor(initial, dtype=torch.float64, device=device)
        if state.ndim != 2 or state.shape[1] != 4:
            raise ValueError(f"initial: expected shape (n, 4), got {tuple(state.shape)}")
        self.x, self.x_dot, self.theta, self.theta_dot = (
            state[:, i].contiguous() for i in range(4)
        )
        self.t = 0  # steps taken: every episode started at the same time
        self.alive = torch.ones(state.shape[0], dtype=torch.bool, device=state.device)

    @property
    def state(self) -> torch.Tensor:
        """(n, 4) float64, gymnasium's state of each episode."""
        return torch.stack((self.x, self.x_dot, self.theta, self.theta_dot), dim=1)

    def obs_columns(self) -> list[torch.Tensor]:
        """What the policy sees, one float32 tensor per component (gymnasium's float32 cast)."""
        return [v.to(torch.float32) for v in (self.x, self.x_dot, self.theta, self.theta_dot)]

    @property
    def obs(self) -> torch.Tensor:
        """(n, 4) float32."""
        return torch.stack(self.obs_columns(), dim=1)

    def step(self, push_right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.x, self.x_dot, self.theta, self.theta_dot, terminated = physics_step(
            self.x, self.x_dot, self.theta, self.theta_dot, push_right
        )
        self.t += 1
        alive = self.alive
        reward = alive.to(torch.float32)
        terminated = terminated & alive
        if self.t >= MAX_EPISODE_STEPS:
            truncated = alive.clone()
            self.alive = torch.zeros_like(alive)
        else:
            truncated = torch.zeros_like(alive)
            self.alive = alive & ~terminated
        return reward, terminated, truncated
