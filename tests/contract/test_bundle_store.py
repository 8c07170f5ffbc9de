"""Module versions on both backends: bundles in a folder + SQLite, and in S3 + DynamoDB (moto).

The same services, the same answers: a bundle is copied to the blob store by digest, layer 3
makes it live, a bad upload is rejected while the live version serves, an id stays with its
bundle, a stale agent save writes nothing, and both adapters refuse to read outside a bundle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import boto3
import pytest
from chimera.adapters.aws.s3_artifacts import S3Artifacts
from chimera.adapters.sandbox import Sandbox
from chimera.domain.errors import (
    ConflictError,
    GuestError,
    NotFoundError,
    ValidationFailedError,
)
from chimera.domain.sandbox import SandboxPolicy
from chimera.ports import Store
from chimera.services import discovery, validation
from chimera.services.contracts import DiscoverRequest, ValidateRequest
from chimera.services.deps import Deps
from chimera.services.execution import load_runtime
from chimera.settings import BUNDLED_AGENTS

from chimera_local.artifacts import LocalArtifacts
from chimera_local.bus import LocalBus
from chimera_local.sqlite_store import SqliteStore

AGENT = "cartpole-linear"
MANIFEST = (BUNDLED_AGENTS / AGENT / "manifest.json").read_bytes()
WASM = (BUNDLED_AGENTS / AGENT / "agent.wasm").read_bytes()
BUNDLES = "chimera-bundles-test"


@dataclass
class Backend:
    deps: Deps
    write: Callable[[str, str, bytes], None]  # (bundle, file name, bytes)


@pytest.fixture
def backend(store: Store, tmp_path: Path) -> Backend:
    """Bundles beside each store of the contract suite: a folder for SQLite, S3 for DynamoDB."""
    sandbox = Sandbox()
    if isinstance(store, SqliteStore):

        def write_file(bundle: str, name: str, data: bytes) -> None:
            (tmp_path / "agents" / bundle).mkdir(parents=True, exist_ok=True)
            (tmp_path / "agents" / bundle / name).write_bytes(data)

        return Backend(
            Deps(store, LocalArtifacts(tmp_path / "agents"), LocalBus(), sandbox), write_file
        )
    s3 = boto3.client("s3", region_name="us-east-1")  # inside the store fixture's mock_aws
    s3.create_bucket(Bucket=BUNDLES)

    def write_object(bundle: str, name: str, data: bytes) -> None:
        s3.put_object(Bucket=BUNDLES, Key=f"agents/{bundle}/{name}", Body=data)

    return Backend(
        Deps(store, S3Artifacts(BUNDLES, "agents/", s3), LocalBus(), sandbox), write_object
    )


def cycle(b: Backend, execution: str) -> tuple[dict, dict]:
    found = discovery.discover(DiscoverRequest(execution_id=execution), b.deps)
    checked = validation.validate(ValidateRequest(execution_id=execution, agent_id=AGENT), b.deps)
    return found.model_dump(), checked.model_dump()


def test_module_versions_agree_on_both_backends(backend):
    b, store = backend, backend.deps.store
    b.write(AGENT, "manifest.json", MANIFEST)
    b.write(AGENT, "agent.wasm", WASM)
    assert cycle(b, "c1") == (
        {"agents": [AGENT], "rejected": []},
        {"ok": True, "problems": []},
    )
    live = store.get_agent(AGENT).live
    assert live.version == 1 and live.digest == hashlib.sha256(WASM).hexdigest()
    assert store.blobs.get(live.key) == WASM  # the serving copy, by digest

    # A bad upload and a bundle claiming the id: the live version serves on.
    b.write(AGENT, "agent.wasm", b"not a module")
    b.write("a-claim", "manifest.json", MANIFEST)
    b.write("a-claim", "agent.wasm", WASM)
    found, checked = cycle(b, "c2")
    assert checked == {"ok": True, "problems": []}
    assert [r["bundle"] for r in found["rejected"]] == ["a-claim"]
    agent = store.get_agent(AGENT)
    assert agent.live == live and agent.bundle == AGENT and agent.rejected.version == 2
    assert load_runtime(b.deps, agent).genome_len == 5

    # A stale save (read before the rejection was recorded) loses and writes nothing.
    stale = agent.model_copy(update={"revision": agent.revision - 1})
    with pytest.raises(ConflictError):
        store.save_agent(stale.model_copy(update={"rejected": None}))
    assert store.get_agent(AGENT) == agent

    # An altered blob is never run.
    store.blobs.put(live.key, b"tampered")
    with pytest.raises(GuestError, match="differs from version 1.s digest"):
        load_runtime(b.deps, agent)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("../other/agent.wasm", ValidationFailedError),
        ("/etc/hostname", ValidationFailedError),
        ("..", ValidationFailedError),
        ("absent.wasm", NotFoundError),
    ],
)
def test_adapters_read_only_inside_a_bundle(backend, name, error):
    backend.write("other", "agent.wasm", WASM)
    backend.write(AGENT, "agent.wasm", WASM)
    with pytest.raises(error):
        backend.deps.artifacts.read_module(AGENT, name, 1 << 20)


def test_adapters_bound_their_reads(backend):
    backend.write(AGENT, "manifest.json", MANIFEST)
    backend.write(AGENT, "agent.wasm", WASM)
    with pytest.raises(ValidationFailedError, match="larger than the policy cap 100 bytes"):
        backend.deps.artifacts.read_module(AGENT, "agent.wasm", 100)
    assert backend.deps.artifacts.read_module(AGENT, "agent.wasm", len(WASM)) == WASM
    ((bundle, raw),) = backend.deps.artifacts.list_bundles(10)
    assert bundle == AGENT and raw == MANIFEST[:11]  # 11 bytes: "more than 10"
    backend.write(AGENT, "empty.wasm", b"")
    assert backend.deps.artifacts.read_module(AGENT, "empty.wasm", 10) == b""
    # Discovery names the file and the cap: the policy's for modules, 1 MiB for manifests.
    small = replace(backend.deps, policy=SandboxPolicy(max_module_bytes=1000))
    out = discovery.discover(DiscoverRequest(execution_id="c0"), small)
    assert out.rejected == [
        {
            "bundle": AGENT,
            "error": f"manifest.module: {AGENT}/agent.wasm is larger than the policy cap 1,000 bytes",
        }
    ]
    big = json.loads(MANIFEST) | {"description": "x" * (discovery.MAX_MANIFEST_BYTES + 1)}
    backend.write(AGENT, "manifest.json", json.dumps(big).encode())
    out = discovery.discover(DiscoverRequest(execution_id="c1"), backend.deps)
    assert out.rejected == [
        {"bundle": AGENT, "error": "manifest.json is larger than 1048576 bytes"}
    ]
