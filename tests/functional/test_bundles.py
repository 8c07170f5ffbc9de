"""Bundles and discovery: an upload becomes a module version that serves only once layer 3
passed it; a bad upload leaves the live module serving; an agent id belongs to its bundle.

Driven the way the optimization cycle drives them: the discovery and validation handlers
with the state machine's input, the API Lambda with REST proxy events, `chimera run`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import wasmtime
from chimera import runtime
from chimera.domain.events import AgentDiscovered
from chimera.settings import BUNDLED_AGENTS

from chimera_local import cli
from chimera_local.workflows import LambdaContext, handler_for
from functions.api import handler as api

AGENT = "cartpole-linear"
EVENTS = Path(__file__).resolve().parents[1] / "events"
CONTEXT = LambdaContext("chimera-api", "arn:aws:lambda:us-east-1:123456789012:function:chimera-api")
ORIGINAL = (BUNDLED_AGENTS / AGENT / "agent.wasm").read_bytes()

# The full ABI, every entry point answering at once, except that chimera_act and
# chimera_predict never return: it compiles, instantiates and reports the right lengths.
LOOPING = wasmtime.wat2wasm("""
(module
  (memory (export "memory") 1)
  (func (export "chimera_abi_version") (result i32) i32.const 1)
  (func (export "chimera_genome_len") (result i32) i32.const 5)
  (func (export "chimera_obs_len") (result i32) i32.const 4)
  (func (export "chimera_reset"))
  (func (export "chimera_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "chimera_act") (param i32 i32 i32 i32 i32 i32) (result i32)
    (loop $l (br $l)) i32.const 0)
  (func (export "chimera_predict") (param i32 i32) (result i64) (loop $l (br $l)) i64.const 0))
""")
NOT_WASM = b"\0asm\x01\0\0\0this is not a module"
# The original module plus a custom section: the same behaviour, another digest (a fix).
FIXED = ORIGINAL + b"\x00\x07\x05fixed\x01"


def predict(job: str = "job-1") -> tuple[int, dict]:
    event = json.loads((EVENTS / "api_predict.json").read_text())
    event["body"] = json.dumps({"job_id": job, "observation": [0.01, 0.0, 0.02, 0.0]})
    response = api.lambda_handler(event, CONTEXT)
    return response["statusCode"], json.loads(response["body"])


def discover(execution: str) -> dict:
    return handler_for("discovery")({"action": "discover", "execution_id": execution})


def validate(execution: str, agent_id: str = AGENT) -> dict:
    return handler_for("validation")(
        {"action": "validate", "execution_id": execution, "agent_id": agent_id}
    )


def discovered_events() -> list[AgentDiscovered]:
    return [e for e in runtime.deps().bus.published if isinstance(e, AgentDiscovered)]


def upload(agents: Path, wasm: bytes, bundle: str = AGENT) -> None:
    (agents / bundle / "agent.wasm").write_bytes(wasm)


@pytest.fixture
def live(home, only_cartpole):
    """The bundled cartpole discovered, validated (module v1 live) and live on its defaults."""
    assert discover("c1")["agents"] == [AGENT]
    assert validate("c1") == {"ok": True, "problems": []}
    choice = handler_for("meta_evolution")(
        {"action": "choose", "execution_id": "c1", "agent_id": AGENT}
    )
    handler_for("evolution")(
        {"action": "start", "execution_id": "c1", "agent_id": AGENT, "choice": choice}
    )
    return only_cartpole


def test_bad_uploads_never_replace_the_live_module(live):
    store = runtime.deps().store
    status, first = predict()
    assert status == 200, first

    # A module that does not compile lands in the bundle. Until discovery, nothing changes:
    # the live bytes are the blob stored by digest, not the bundle file.
    upload(live, NOT_WASM)
    assert predict("job-2")[0] == 200
    assert discover("c2")["rejected"] == []  # registered as a version, not yet validated
    agent = store.get_agent(AGENT)
    assert agent.pending.version == 2 and agent.live.version == 1
    assert predict("job-3")[0] == 200  # a pending version never serves
    # Validation rejects it; the agent still evolves on its live module.
    assert validate("c2") == {"ok": True, "problems": []}
    agent = store.get_agent(AGENT)
    assert agent.live.version == 1 and agent.live.digest == hashlib.sha256(ORIGINAL).hexdigest()
    assert agent.pending is None and agent.rejected.version == 2
    assert "does not compile" in agent.rejected.problems[0]
    status, body = predict("job-4")
    assert status == 200 and body["output"] == first["output"]

    # A module that compiles, has the ABI and the right lengths, but loops.
    upload(live, LOOPING)
    discover("c3")
    assert validate("c3")["ok"] is True
    agent = store.get_agent(AGENT)
    assert agent.live.version == 1 and agent.rejected.version == 3
    assert agent.rejected.problems[0].startswith("smoke call chimera_act: fuel budget")
    status, body = predict("job-5")
    assert status == 200 and body["output"] == first["output"]

    # The fix passes layer 3 and becomes the live module; the rejection is cleared.
    upload(live, FIXED)
    discover("c4")
    assert validate("c4") == {"ok": True, "problems": []}
    agent = store.get_agent(AGENT)
    assert agent.live.version == 4 and agent.live.digest == hashlib.sha256(FIXED).hexdigest()
    assert agent.live.validated_at is not None
    assert agent.pending is None and agent.rejected is None
    status, body = predict("job-6")
    assert status == 200 and body["output"] == first["output"]
    summaries = [d.summary for d in store.list_decisions("c4") if d.layer == "validation"]
    assert summaries == [f"{AGENT}: module v4 from bundle {AGENT} valid, now live"]


def test_a_first_module_that_fails_leaves_the_agent_invalid(home, only_cartpole):
    upload(only_cartpole, LOOPING)
    discover("c1")
    result = validate("c1")
    assert result["ok"] is False
    assert result["problems"][0].startswith("smoke call chimera_act: fuel budget")
    agent = runtime.deps().store.get_agent(AGENT)
    assert agent.live is None and agent.rejected.version == 1
    # Started anyway (evolution-run on its own), nothing runs the unvalidated module.
    choice = handler_for("meta_evolution")(
        {"action": "choose", "execution_id": "c1", "agent_id": AGENT}
    )
    handler_for("evolution")(
        {"action": "start", "execution_id": "c1", "agent_id": AGENT, "choice": choice}
    )
    status, body = predict()
    assert status == 404 and "validated live module" in body["message"], body


def test_another_bundle_cannot_claim_an_agent_id(live):
    store = runtime.deps().store
    before = store.get_agent(AGENT)
    events = len(discovered_events())
    # A bundle sorting first, with breast-cancer's module, claiming cartpole's id.
    impostor = live / "a-impostor"
    shutil.copytree(BUNDLED_AGENTS / "breast-cancer-linear", impostor)
    manifest = json.loads((impostor / "manifest.json").read_text())
    (impostor / "manifest.json").write_text(json.dumps(manifest | {"agent_id": AGENT}))

    out = discover("c2")
    assert out["agents"] == [AGENT]
    (rejected,) = out["rejected"]
    assert rejected["bundle"] == "a-impostor"
    assert "'cartpole-linear' belongs to bundle 'cartpole-linear'" in rejected["error"]
    assert "bundle 'a-impostor' may not claim it" in rejected["error"]
    assert store.get_agent(AGENT) == before  # not a byte of the agent changed
    assert len(discovered_events()) == events
    assert validate("c2") == {"ok": True, "problems": []}
    status, body = predict()
    assert status == 200, body


@pytest.mark.parametrize(
    ("module", "error"),
    [
        ("../cartpole-linear/agent.wasm", "manifest.module: '../cartpole-linear/agent.wasm' is"),
        ("/etc/hostname", "manifest.module: '/etc/hostname' is not a file name"),
        ("missing.wasm", "manifest.module: 'missing.wasm' is not in bundle 'other'"),
    ],
)
def test_a_module_outside_its_bundle_is_refused(home, only_cartpole, module, error):
    other = only_cartpole / "other"
    other.mkdir()
    manifest = json.loads((only_cartpole / AGENT / "manifest.json").read_text())
    (other / "manifest.json").write_text(
        json.dumps(manifest | {"agent_id": "other", "module": module})
    )
    out = discover("c1")
    assert out["agents"] == [AGENT]
    assert out["rejected"] == [{"bundle": "other", "error": out["rejected"][0]["error"]}]
    assert out["rejected"][0]["error"].startswith(error)


def test_retried_discovery_and_validation_leave_the_same_state(home, only_cartpole):
    store = runtime.deps().store
    first = discover("c1")
    agent = store.get_agent(AGENT)
    assert discover("c1") == first  # the state machine's retry: same input
    assert store.get_agent(AGENT) == agent
    assert [e.agent_id for e in discovered_events()] == [AGENT]
    assert len(store.list_decisions("c1")) == 1

    result = validate("c1")
    validated = store.get_agent(AGENT)
    assert validate("c1") == result and result["ok"] is True
    assert store.get_agent(AGENT) == validated and validated.live.version == 1
    assert len(store.list_decisions("c1")) == 2

    # A new upload: one version, one announcement, however often each step runs.
    upload(only_cartpole, NOT_WASM)
    assert discover("c2") == discover("c2")
    assert len(discovered_events()) == 2 and store.get_agent(AGENT).pending.version == 2
    rejected = validate("c2")
    after = store.get_agent(AGENT)
    assert validate("c2") == rejected and store.get_agent(AGENT) == after
    assert after.rejected.version == 2 and after.live.version == 1 and after.versions == 2
    # The next cycle sees the same rejected bundle: nothing new, reported again.
    discover("c3")
    assert store.get_agent(AGENT) == after and len(discovered_events()) == 2
    validate("c3")
    (decision,) = [d for d in store.list_decisions("c3") if d.layer == "validation"]
    assert decision.detail["rejected"]["version"] == 2


def test_an_agent_stored_before_module_versions_goes_live_after_one_cycle(home, only_cartpole):
    from chimera.domain.models import Agent, AgentManifest

    store = runtime.deps().store
    manifest = AgentManifest.model_validate_json(
        (only_cartpole / AGENT / "manifest.json").read_bytes()
    )
    old = {
        "manifest": manifest.model_dump(mode="json"),
        "module_key": f"{AGENT}/agent.wasm",
        "module_digest": hashlib.sha256(ORIGINAL).hexdigest(),
    }
    store.put_agent(Agent.model_validate(old))  # the first layout: no revision, no blob
    discover("c1")
    assert len(discovered_events()) == 0  # the same module: nothing new to announce
    assert validate("c1") == {"ok": True, "problems": []}
    agent = store.get_agent(AGENT)
    assert agent.live.version == 1 and agent.bundle == AGENT and agent.revision == 1


def test_chimera_run_reports_rejected_bundles_and_exits_65(home, only_cartpole, capsys):
    live = only_cartpole
    discover("c1")
    validate("c1")  # module v1 live
    upload(live, NOT_WASM)
    impostor = live / "b-impostor"
    shutil.copytree(live / AGENT, impostor)
    (impostor / "agent.wasm").write_bytes(ORIGINAL)
    code = cli.main(["run", "--quiet"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_REJECTED == 65, out + err
    assert "2 bundle(s) rejected" in err
    text = out[out.index("Rejected bundles:") :]
    assert f"bundle 'cartpole-linear' (agent {AGENT}, module v2) rejected: " in text
    assert "module does not compile" in text and "live module v1 keeps serving" in text
    assert "bundle 'b-impostor' rejected: agent id 'cartpole-linear' belongs to" in text
    report = (runtime.deps().settings.home / "reports" / "latest.html").read_text()
    assert "<h2>Rejected bundles</h2>" in report and "module does not compile" in report
    assert "b-impostor" in report
    # The cycle still evolved the agent on its live module.
    (run,) = runtime.deps().store.list_runs(AGENT)
    assert run.status == "succeeded" and f"decision: {run.decision}" in out
    assert runtime.deps().store.get_agent(AGENT).live.version == 1


def test_an_upload_during_validation_is_the_one_that_goes_live(home, only_cartpole):
    """Discovery registers v2 while layer 3 is checking v1: v1's save loses its condition,
    validation re-reads and checks v2; v1 never serves."""
    store, sandbox = runtime.deps().store, runtime.deps().sandbox
    discover("c1")
    real_inspect = sandbox.inspect
    raced = []

    def inspect_while_a_new_upload_lands(wasm: bytes):
        if not raced:
            raced.append(True)
            upload(only_cartpole, FIXED)
            discover("c2")
        return real_inspect(wasm)

    sandbox.inspect = inspect_while_a_new_upload_lands
    try:
        assert validate("c1") == {"ok": True, "problems": []}
    finally:
        sandbox.inspect = real_inspect
    agent = store.get_agent(AGENT)
    assert agent.live.version == 2 and agent.live.digest == hashlib.sha256(FIXED).hexdigest()
    assert agent.pending is None and agent.rejected is None and agent.versions == 2
