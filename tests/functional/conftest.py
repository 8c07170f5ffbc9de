from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from chimera import runtime
from chimera.settings import BUNDLED_AGENTS


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh CHIMERA_HOME; handlers build their ports from it."""
    monkeypatch.setenv("CHIMERA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    runtime.deps.cache_clear()
    yield tmp_path / "home"
    runtime.deps.cache_clear()


@pytest.fixture
def only_cartpole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    agents = tmp_path / "agents"
    shutil.copytree(BUNDLED_AGENTS / "cartpole-linear", agents / "cartpole-linear")
    monkeypatch.setenv("CHIMERA_AGENTS_DIR", str(agents))
    runtime.deps.cache_clear()
    return agents
