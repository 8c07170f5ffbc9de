"""Torch twins of the bundled agents' policy families, batched over genomes.

A twin is the agent's `policy(genome, obs)` written for tensors: `outputs(genes, obs)` takes a
population's genes as one (P, G) float32 tensor and observations as (P, N, obs_len) (each
agent its own) or (N, obs_len) (shared by all), and returns what `chimera_act` writes: a
(P, N) float32 tensor. The arithmetic is the C source's, in its order: float32 products and
sums, the bias first, then each weight times its observation value, one after another (wasm
has no fused multiply-add and clang does not reorder float sums), so on CPU and GPU the twin
reproduces the module's outputs bit for bit. The twin check (check.py) still compares them
before any use.

`TwinPolicy` puts a twin behind the suites' `BatchPolicy` interface (prepare / act, numpy in
and out), the same interface the sandboxed module offers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from chimera.domain.models import AgentManifest

Family = Literal["linear", "linear-step"]
FAMILIES: tuple[Family, ...] = ("linear", "linear-step")


class NoTwinError(Exception):
    """The agent declares no twin (or one this code does not know): it has no GPU path."""


@dataclass(frozen=True)
class Twin:
    """One family's tensor form for one agent's shape (obs_len weights, then the bias)."""

    agent_id: str
    family: Family
    obs_len: int

    @property
    def genome_len(self) -> int:
        return self.obs_len + 1

    def outputs(self, genes: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """(P, G) genes and (P, N, obs_len) or (N, obs_len) observations -> (P, N) outputs."""
        if genes.ndim != 2 or genes.shape[1] != self.genome_len:
            raise ValueError(
                f"genes: expected shape (P, {self.genome_len}), got {tuple(genes.shape)}"
            )
        if obs.shape[-1] != self.obs_len or obs.ndim not in (2, 3):
            raise ValueError(
                f"obs: expected (P, N, {self.obs_len}) or (N, {self.obs_len}), "
                f"got {tuple(obs.shape)}"
            )
        if obs.ndim == 2:
            obs = obs.unsqueeze(0)  # shared: broadcast over the population
        columns = [obs[:, :, i].to(torch.float32) for i in range(self.obs_len)]
        return self.outputs_columns(genes, columns)

    def outputs_columns(self, genes: torch.Tensor, columns: list[torch.Tensor]) -> torch.Tensor:
        """The same, observations given one (P, N) or (1, N) tensor per component."""
        genes = genes.to(torch.float32)
        v = genes[:, self.obs_len : self.obs_len + 1]  # v = b; v += g[i] * o[i], in that order
        for i in range(self.obs_len):
            v = v + genes[:, i : i + 1] * columns[i]
        if self.family == "linear-step":
            return (v > 0).to(torch.float32)
        return v


def twin_for(manifest: AgentManifest) -> Twin:
    """The twin the manifest declares, shaped by its genome; NoTwinError when it declares none."""
    if manifest.twin is None:
        raise NoTwinError(f"agent {manifest.agent_id} declares no twin: it has no GPU path")
    if manifest.twin not in FAMILIES:
        raise NoTwinError(f"twin: agent {manifest.agent_id}: unknown family {manifest.twin!r}")
    if manifest.genome_len != manifest.obs_len + 1:
        raise ValueError(
            f"twin: agent {manifest.agent_id}: a {manifest.twin} twin takes obs_len + 1 = "
            f"{manifest.obs_len + 1} genes (weights, then the bias); the genome has "
            f"{manifest.genome_len}"
        )
    return Twin(agent_id=manifest.agent_id, family=manifest.twin, obs_len=manifest.obs_len)


class TwinPolicy:
    """A twin behind the `BatchPolicy` interface: prepare(genomes, n_obs, shared), act(obs)."""

    def __init__(self, twin: Twin, device: str | torch.device = "cpu") -> None:
        self.twin = twin
        self.device = torch.device(device)
        self._genes: torch.Tensor | None = None
        self._n_obs = 0
        self._shared = False

    def prepare(self, genomes: np.ndarray, n_obs: int, shared: bool) -> None:
        genes = torch.as_tensor(np.asarray(genomes, dtype=np.float32), device=self.device)
        if genes.ndim != 2 or genes.shape[1] != self.twin.genome_len:
            raise ValueError(
                f"genomes: the twin takes {self.twin.genome_len} genes, got shape "
                f"{tuple(genes.shape)}"
            )
        self._genes, self._n_obs, self._shared = genes, n_obs, shared

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self._genes is None:
            raise ValueError("prepare() must come before act()")
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        p = self._genes.shape[0]
        if self._shared:
            o = o.reshape(self._n_obs, self.twin.obs_len)
        else:
            o = o.reshape(p, self._n_obs, self.twin.obs_len)
        return self.twin.outputs(self._genes, o).cpu().numpy()
