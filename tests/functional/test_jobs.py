"""Live jobs as their callers run them: REST v1 proxy events (tests/events/api_post_job*.json,
api_post_kpis_labels*.json) into the API handler, on agents brought live through the layer
handlers, and the traffic generator's fault and drift injection."""

from __future__ import annotations

import importlib
import json
import math
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from chimera import runtime
from chimera.domain.events import KpiRecorded
from chimera.domain.models import Alias, Genome
from chimera.domain.sandbox import SandboxPolicy
from chimera.domain.suites import (
    HOLDOUT_SEED_BASE,
    LIVE_SEED_BASE,
    BreastCancer,
    CartPole,
    _breast_cancer_split,
    write_breast_cancer_split,
)
from chimera.services.execution import generation_seed
from chimera.services.jobs import Drift, Fault
from chimera.settings import BUNDLED_AGENTS

from chimera_local import traffic
from chimera_local.workflows import LambdaContext, handler_for
from functions.api import handler as api

EVENTS = Path(__file__).resolve().parents[1] / "events"
CONTEXT = LambdaContext("chimera-api", "arn:aws:lambda:us-east-1:123456789012:function:chimera-api")
CARTPOLE, CLASSIFIER = "cartpole-linear", "breast-cancer-linear"
BALANCER = (0.3, 0.8, 3.0, 1.2, 0.0)  # a linear CartPole policy that balances to 500


def call(name: str, **override: object) -> tuple[int, dict]:
    event = json.loads((EVENTS / f"api_{name}.json").read_text())
    event.update(override)
    response = api.lambda_handler(event, CONTEXT)
    return response["statusCode"], json.loads(response["body"])


def job_event(agent: str, body: dict) -> dict:
    return {
        "path": f"/agents/{agent}/jobs",
        "pathParameters": {"id": agent},
        "body": json.dumps(body),
    }


def classifier_genes() -> tuple[float, ...]:
    """Logistic regression on the training part (plain gradient descent): a real classifier."""
    data = _breast_cancer_split()
    x, y = data.x_train.astype(np.float64), data.y_train
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(500):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        w -= 0.5 * (x.T @ (p - y) / len(y) + 1e-3 * w)
        b -= 0.5 * float(np.mean(p - y))
    return (*np.clip(w, -8, 8).tolist(), float(b))


def set_versions(
    agent: str,
    genes: dict[int, tuple[float, ...]],
    weights: dict[int, float],
    experiment_id: str | None = None,
    step: int | None = None,
) -> None:
    """Genome versions beyond v1 and the alias over them, as a promotion or a canary sets it."""
    store = runtime.deps().store
    for version, g in genes.items():
        store.add_genome(Genome(agent_id=agent, version=version, genes=g, parent_version=1))
    alias = store.get_alias(agent)
    assert alias is not None
    store.set_alias(
        Alias(
            agent_id=agent,
            weights=weights,
            revision=alias.revision + 1,
            experiment_id=experiment_id,
            step=step,
        )
    )


@pytest.fixture
def live(home, tmp_path, monkeypatch):
    """Both bundled agents discovered, validated and live on their v1 (default) genomes."""
    agents = tmp_path / "agents"
    for name in (CARTPOLE, CLASSIFIER):
        shutil.copytree(BUNDLED_AGENTS / name, agents / name)
    monkeypatch.setenv("CHIMERA_AGENTS_DIR", str(agents))
    runtime.deps.cache_clear()
    handler_for("discovery")({"action": "discover", "execution_id": "jobs-1"})
    for agent in (CARTPOLE, CLASSIFIER):
        handler_for("validation")(
            {"action": "validate", "execution_id": "jobs-1", "agent_id": agent}
        )
        choice = handler_for("meta_evolution")(
            {"action": "choose", "execution_id": "jobs-1", "agent_id": agent}
        )
        handler_for("evolution")(
            {"action": "start", "execution_id": "jobs-1", "agent_id": agent, "choice": choice}
        )
    return runtime.deps()


def replay_episode(genes: tuple[float, ...], seed: int) -> float:
    """The same episode outside the sandbox: gymnasium's CartPole-v1 and the policy in numpy."""
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    env = CartPoleEnv()
    obs, _ = env.reset(seed=seed)
    g = np.asarray(genes, dtype=np.float32)
    total, terminated = 0.0, False
    while not terminated and total < 500:
        o = np.asarray(obs, dtype=np.float32)
        v = g[4]
        for i in range(4):
            v = np.float32(v + g[i] * o[i])
        obs, reward, terminated, _, _ = env.step(int(v > 0))
        total += float(reward)
    return total


def kpi_events(deps, job_id: str) -> list[KpiRecorded]:
    return [
        e for e in deps.bus.published if isinstance(e, KpiRecorded) and e.record.job_id == job_id
    ]


# -- CartPole: the outcome is known at once ---------------------------------------------------
def test_a_cartpole_job_is_an_episode_on_a_live_seed_recorded_with_its_return(live):
    set_versions(CARTPOLE, {2: BALANCER}, {2: 1.0})
    status, body = call("post_job")
    assert status == 200, body
    assert body["outcome"] == "recorded" and body["genome_version"] == 2
    job = live.store.find_job(CARTPOLE, "episode-1")
    seed = job.input["seed"]
    assert LIVE_SEED_BASE <= seed < LIVE_SEED_BASE + HOLDOUT_SEED_BASE
    assert body["output"] == body["score"] == replay_episode(BALANCER, seed)
    (kpi,) = live.store.list_kpis(CARTPOLE)  # published on the bus, ingested by layer 5
    assert (kpi.job_id, kpi.genome_version, kpi.success) == ("episode-1", 2, True)
    assert kpi.score == body["score"] and kpi.fuel == body["fuel"] > 0
    assert kpi.recorded_at == job.at and kpi.experiment_id is None


def test_the_same_job_id_twice_is_one_job_and_one_kpi(live):
    first = call("post_job")
    again = call("post_job")
    assert first[0] == again[0] == 200
    assert again[1] == first[1]  # the stored answer, latency included: nothing ran again
    assert len(live.store.list_kpis(CARTPOLE)) == 1
    assert len(kpi_events(live, "episode-1")) == 1  # nothing published again either


def test_a_job_killed_before_publishing_its_kpi_publishes_it_when_retried(live, monkeypatch):
    """The first attempt stored its job and died before its KPI went out: the retry answers
    the stored job (running nothing) and publishes the KPI that is missing."""
    publish = live.bus.publish

    def killed(events):
        raise SystemExit("killed between the job's write and its KPI's publication")

    monkeypatch.setattr(live.bus, "publish", killed)
    with pytest.raises(SystemExit):
        call("post_job")
    job = live.store.find_job(CARTPOLE, "episode-1")
    assert job is not None and live.store.list_kpis(CARTPOLE) == []
    monkeypatch.setattr(live.bus, "publish", publish)
    status, body = call("post_job")
    assert status == 200 and body["latency_ms"] == job.latency_ms  # the stored job's answer
    (kpi,) = live.store.list_kpis(CARTPOLE)
    assert kpi.score == body["score"] == job.output and kpi.recorded_at == job.at
    assert call("post_job") == (200, body) and len(kpi_events(live, "episode-1")) == 1


def test_a_cartpole_job_takes_no_observation(live):
    status, body = call("post_job", body=json.dumps({"job_id": "e", "observation": [0.0] * 4}))
    assert status == 400 and body["field"] == "observation", body
    assert live.store.find_job(CARTPOLE, "e") is None and live.store.list_kpis(CARTPOLE) == []


@pytest.mark.parametrize(
    ("override", "status", "field"),
    [
        ({}, 400, "job_id"),  # api_post_job_bad_body.json: an empty job id
        ({"body": json.dumps({"job_id": "x", "observation": "none"})}, 400, "observation"),
        ({"body": json.dumps({"job_id": "x", "extra": 1})}, 400, "extra"),
        ({"body": json.dumps({"job_id": "x" * 257})}, 400, "job_id"),
        ({"body": '{"job_id": "x", "observation": [1e999]}'}, 400, "observation.0"),
    ],
)
def test_bad_job_bodies_are_400_naming_the_field(live, override, status, field):
    code, body = call("post_job_bad_body", **override)
    assert (code, body.get("field")) == (status, field), body
    assert live.store.list_kpis(CARTPOLE) == []


def test_a_job_on_an_unknown_agent_is_404_naming_it(live):
    status, body = call("post_job_unknown_agent")
    assert status == 404 and body["field"] == "id" and "no-such-agent" in body["message"]


# -- breast-cancer: the outcome arrives later, as a label --------------------------------------
def test_a_classification_awaits_its_label_and_the_label_records_its_kpi(live):
    genes = classifier_genes()
    set_versions(CLASSIFIER, {2: genes}, {2: 1.0})
    status, body = call("post_job_classify")
    assert status == 200, body
    assert body["outcome"] == "awaiting-label" and body["score"] is None
    job = live.store.find_job(CLASSIFIER, "sample-1")
    data = _breast_cancer_split()
    sample = job.input["sample"]
    x = data.x_live[sample].astype(np.float64)
    assert math.isclose(body["output"], x @ np.asarray(genes[:-1]) + genes[-1], rel_tol=1e-4)
    assert live.store.list_kpis(CLASSIFIER) == []  # no outcome yet

    assert call("post_kpis_labels") == (200, {"received": 1, "new": 1})  # its label: 1
    (kpi,) = live.store.list_kpis(CLASSIFIER)
    assert kpi.job_id == "sample-1" and kpi.genome_version == 2 and kpi.success
    assert kpi.score == (1.0 if body["output"] > 0 else 0.0)
    assert kpi.recorded_at == job.at and kpi.latency_ms == job.latency_ms
    assert call("post_kpis_labels") == (200, {"received": 1, "new": 0})  # the same label again

    other = json.loads(json.loads((EVENTS / "api_post_kpis_labels.json").read_text())["body"])
    other["labels"][0]["label"] = 0
    status, answer = call("post_kpis_labels", body=json.dumps(other))
    assert status == 409 and answer["field"] == "labels.0.label", answer
    assert live.store.list_kpis(CLASSIFIER) == [kpi]

    status, again = call("post_job_classify")  # the job, asked again, now knows its score
    assert status == 200 and again["outcome"] == "recorded" and again["score"] == kpi.score


def test_a_label_for_an_unknown_job_is_404_naming_it_and_stores_nothing(live):
    assert call("post_job_classify")[0] == 200
    status, body = call("post_kpis_labels_unknown_job")  # labels.0 is fine, labels.1 is not
    assert status == 404 and body["field"] == "labels.1.job_id", body
    assert live.store.list_kpis(CLASSIFIER) == []  # not even the good label's KPI


@pytest.mark.parametrize(
    ("labels", "status", "field"),
    [
        (
            [{"agent_id": "no-such-agent", "job_id": "sample-1", "label": 1}],
            404,
            "labels.0.agent_id",
        ),
        ([{"agent_id": CARTPOLE, "job_id": "episode-1", "label": 1}], 400, "labels.0.job_id"),
        ([{"agent_id": CLASSIFIER, "job_id": "sample-1", "label": 2}], 400, "labels.0.label"),
        (
            [
                {"agent_id": CLASSIFIER, "job_id": "sample-1", "label": 1},
                {"agent_id": CLASSIFIER, "job_id": "sample-1", "label": 0},
            ],
            409,
            "labels.1.label",
        ),
        ([], 400, "records"),
    ],
)
def test_bad_labels_are_refused_naming_the_field(live, labels, status, field):
    assert call("post_job")[0] == 200 and call("post_job_classify")[0] == 200
    code, body = call("post_kpis_labels", body=json.dumps({"labels": labels}))
    assert (code, body.get("field")) == (status, field), body
    assert live.store.list_kpis(CLASSIFIER) == []


def test_a_guest_answering_infinity_is_a_422_and_a_failed_kpi(live):
    """A client's observation that drives the classifier's logit past float32: the guest
    answers infinity, which is its failure, recorded (and answered again on a retry)."""
    genes = classifier_genes()
    set_versions(CLASSIFIER, {2: genes}, {2: 1.0})
    huge = [3e38 if w >= 0 else -3e38 for w in genes[:-1]]
    event = job_event(CLASSIFIER, {"job_id": "overflow", "observation": huge})
    for _ in range(2):
        status, body = call("post_job_classify", **event)
        assert status == 422 and body["error"] == "GuestError", body
        assert "non-finite" in body["message"]
    (kpi,) = live.store.list_kpis(CLASSIFIER)
    assert not kpi.success and kpi.score is None and kpi.reason.startswith("bad-output")
    assert live.store.find_job(CLASSIFIER, "overflow").outcome == "failed"


# -- routing: sticky by job key, by the alias weights, carrying the experiment ----------------
def test_routing_is_sticky_by_job_key_and_splits_by_weight(live):
    set_versions(CARTPOLE, {2: BALANCER}, {1: 0.5, 2: 0.5}, experiment_id="exp-1", step=2)
    set_versions(CLASSIFIER, {2: classifier_genes()}, {1: 0.5, 2: 0.5}, "exp-2", 1)
    n = 160
    versions: dict[str, list[int]] = {CARTPOLE: [], CLASSIFIER: []}
    for agent in versions:
        for i in range(n):
            status, body = call("post_job", **job_event(agent, {"job_id": f"key-{i}"}))
            assert status == 200, body
            versions[agent].append(body["genome_version"])
            assert (body["experiment_id"], body["step"]) == (
                ("exp-1", 2) if agent == CARTPOLE else ("exp-2", 1)
            )
    # The same key lands on the same version for both agents: routing is a function of the
    # key and the weights alone, not of chance or of which agent asks.
    assert versions[CARTPOLE] == versions[CLASSIFIER]
    on_v2 = versions[CARTPOLE].count(2)
    assert abs(on_v2 - n / 2) <= 4 * math.sqrt(n / 4), on_v2  # binomial(160, 0.5), 4 sigma
    kpis = live.store.list_kpis(CARTPOLE)
    assert len(kpis) == n and {(k.experiment_id, k.step) for k in kpis} == {("exp-1", 2)}
    by_version = {k.job_id: k.genome_version for k in kpis}
    assert [by_version[f"key-{i}"] for i in range(n)] == versions[CARTPOLE]


# -- live data is neither training nor hold-out data -----------------------------------------
def test_live_data_is_disjoint_from_training_and_holdout(monkeypatch, tmp_path):
    from gymnasium.envs.classic_control import cartpole

    seeds: dict[str, list[int]] = {"train": [], "holdout": [], "live": []}
    current = ["train"]
    for cls in (cartpole.CartPoleVectorEnv, cartpole.CartPoleEnv):
        original = cls.reset

        def reset(self, *, seed=None, options=None, _original=original):
            seeds[current[0]].append(seed)
            return _original(self, seed=seed, options=options)

        monkeypatch.setattr(cls, "reset", reset)

    class Zero:  # a policy that always pushes left
        def prepare(self, genomes, n_obs, shared):
            self.n = len(genomes)

        def act(self, obs):
            return np.zeros((self.n, 1), dtype=np.float32)

    suite = CartPole(train_episodes=2, holdout_episodes=2)
    genomes = np.zeros((3, 5), dtype=np.float32)
    for run_seed in (0, 7, 2**31 - 1, 10**12):
        for generation in (0, 1, 999):
            suite.evaluate(Zero(), genomes, seed=generation_seed(run_seed, generation))
        current[0] = "holdout"
        suite.evaluate(Zero(), genomes, seed=run_seed, split="holdout")
        current[0] = "train"
    current[0] = "live"
    for i in range(200):
        suite.run_live(Zero(), [0.0] * 5, suite.live_input(f"job-{i}"))
    assert max(seeds["train"]) < HOLDOUT_SEED_BASE <= min(seeds["holdout"])
    assert max(seeds["holdout"]) < LIVE_SEED_BASE <= min(seeds["live"])
    assert len(set(seeds["live"])) == 200  # a fresh episode per job key
    assert suite.live_input("job-1") == suite.live_input("job-1")  # a retry replays it

    data = _breast_cancer_split()
    parts = [set(data.i_train), set(data.i_holdout), set(data.i_live)]
    assert [len(p) for p in parts] == [341, 114, 114] and len(set.union(*parts)) == 569
    train_rows = {row.tobytes() for row in data.x_train}
    assert not any(row.tobytes() in train_rows for row in data.x_live)
    assert not any(row.tobytes() in train_rows for row in data.x_holdout)
    assert abs(data.y_live.mean() - data.y_train.mean()) < 0.01  # stratified
    bc = BreastCancer()
    samples = {bc.live_input(f"job-{i}")["sample"] for i in range(2000)}
    assert samples == set(range(114))  # every live sample is served, and only those
    write_breast_cancer_split(tmp_path / "split.npz")  # what the Lambda layer ships
    with np.load(tmp_path / "split.npz") as packaged:
        for key, value in data._asdict().items():
            np.testing.assert_array_equal(packaged[key], value)


# -- fault and drift injection (the traffic generator's) ----------------------------------------
def test_a_degraded_version_drops_by_about_its_factor_and_drift_is_felt(live):
    genes = classifier_genes()
    set_versions(CLASSIFIER, {2: genes}, {1: 0.5, 2: 0.5})
    factor, n = 0.6, 400
    fault = Fault(degrade={2: factor}, drift=Drift(from_job=n, amount=3.0))
    summary = traffic.drive(live, CLASSIFIER, jobs=n, rate=20, fault=fault, label_delay_s=5)
    assert summary.jobs == n and summary.labels_posted == n and summary.failures == 0
    data = _breast_cancer_split()
    # What each job's answer was worth undegraded: v2's own correctness on its sample.
    expected: list[float] = []
    v1_right: list[float] = []
    for i in range(n):
        job = live.store.find_job(CLASSIFIER, f"traffic-0-{i}")
        sample = job.input["sample"]
        if job.genome_version == 2:
            logit = float(data.x_live[sample].astype(np.float64) @ np.asarray(genes[:-1]))
            right = float((logit + genes[-1] > 0) == (data.y_live[sample] == 1))
            expected.append(right * factor + (1 - right) * (1 - factor))
        else:  # v1 (all zeros) is not degraded: it always answers class 0
            assert job.output == 0.0
            v1_right.append(float(data.y_live[sample] == 0))
    v2 = summary.versions[2]
    assert v2.jobs == len(expected) and len(v2.scores) == len(expected)
    sigma = math.sqrt(sum(p * (1 - p) for p in expected)) / len(expected)
    assert abs(v2.mean_score - np.mean(expected)) <= 4 * sigma, (v2.mean_score, expected)
    assert v2.mean_score < 0.7  # a ~97 % classifier, answering right ~60 % of the time
    assert summary.versions[1].mean_score == pytest.approx(np.mean(v1_right))  # untouched
    kpis = live.store.list_kpis(CLASSIFIER, limit=10_000)
    assert len(kpis) == n  # one KPI per job, joined from its label

    # Drift: from the next drive's first job on, every feature is shifted by 3 sds.
    drifted = traffic.drive(
        live, CLASSIFIER, jobs=200, rate=20, fault=Fault(drift=Drift(0, 3.0)), label_delay_s=5
    )
    calm = traffic.drive(live, CLASSIFIER, jobs=200, rate=20, label_delay_s=5)
    assert drifted.first_job_id == f"traffic-0-{n}"  # fresh job ids, numbered on
    assert drifted.versions[2].mean_score < calm.versions[2].mean_score - 0.15


def test_a_degraded_cartpole_version_loses_its_balance(live):
    set_versions(CARTPOLE, {2: BALANCER}, {2: 1.0})
    clean = traffic.drive(live, CARTPOLE, jobs=20, rate=50)
    assert clean.versions[2].mean_score > 450
    degraded = traffic.drive(live, CARTPOLE, jobs=20, rate=50, fault=Fault(degrade={2: 0.5}))
    assert degraded.versions[2].mean_score < 0.8 * clean.versions[2].mean_score
    slow = traffic.drive(live, CARTPOLE, jobs=5, rate=50, fault=Fault(slow={2: 250.0}))
    jobs = [live.store.find_job(CARTPOLE, f"traffic-0-{i}") for i in range(40, 45)]
    assert all(j.latency_ms >= 250.0 for j in jobs) and slow.jobs == 5
    # Deterministic per job id: the same job perturbed the same way gives the same return.
    suite = CartPole()
    fault = Fault(degrade={2: 0.5}).for_job("traffic-0-20", 2, 0)
    first = live.store.find_job(CARTPOLE, "traffic-0-20")
    from chimera.services.execution import load_runtime

    runtime_ = load_runtime(live, live.store.get_agent(CARTPOLE))
    replay = suite.run_live(runtime_, BALANCER, first.input, fault)
    assert replay.output == first.output
    assert zlib.crc32(b"traffic-0-20") % HOLDOUT_SEED_BASE + LIVE_SEED_BASE == first.input["seed"]


def test_records_and_labels_in_one_batch_are_stored_together_or_not_at_all(live):
    assert call("post_job_classify")[0] == 200
    record = json.loads(json.loads((EVENTS / "api_post_kpis.json").read_text())["body"])
    label = json.loads(json.loads((EVENTS / "api_post_kpis_labels.json").read_text())["body"])
    bad = {"records": [record["records"][0] | {"genome_version": 9}], **label}
    status, body = call("post_kpis_labels", body=json.dumps(bad))
    assert status == 400 and body["field"] == "records.0.genome_version", body
    assert live.store.list_kpis(CLASSIFIER) == [] and live.store.list_kpis(CARTPOLE) == []
    both = json.dumps({**record, **label})
    assert call("post_kpis_labels", body=both) == (200, {"received": 2, "new": 2})
    assert call("post_kpis_labels", body=both) == (200, {"received": 2, "new": 0})
    assert [k.job_id for k in live.store.list_kpis(CLASSIFIER)] == ["sample-1"]
    assert [k.job_id for k in live.store.list_kpis(CARTPOLE)] == ["job-1"]


# -- modules written to misbehave (tests/hostile/): each job fails alone, the host serves on --
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hostile"))
hostile = importlib.import_module("hostile")


@pytest.mark.parametrize(
    "case", [c for c in hostile.RUNTIME if c.stage == "act"], ids=lambda c: c.name
)
def test_a_sleeper_module_fails_its_live_job_with_a_reason_and_the_host_serves_on(
    home, tmp_path, monkeypatch, case
):
    agents = tmp_path / "agents"
    shutil.copytree(BUNDLED_AGENTS / CARTPOLE, agents / CARTPOLE)
    (agents / case.name).mkdir()
    (agents / case.name / "manifest.json").write_text(json.dumps(case.manifest()))
    (agents / case.name / "agent.wasm").write_bytes(case.wasm())
    monkeypatch.setenv("CHIMERA_AGENTS_DIR", str(agents))
    runtime.deps.cache_clear()
    deps = runtime.deps()
    handler_for("discovery")({"action": "discover", "execution_id": "hostile-jobs"})
    for agent in (CARTPOLE, case.name):  # the sleeper passes layer 3: it behaves once
        if agent == case.name:  # its policy: a small budget keeps the test fast
            deps.policy = deps.sandbox.policy = SandboxPolicy(**case.sandbox_policy)
        assert handler_for("validation")(
            {"action": "validate", "execution_id": "hostile-jobs", "agent_id": agent}
        )["ok"]
        choice = handler_for("meta_evolution")(
            {"action": "choose", "execution_id": "hostile-jobs", "agent_id": agent}
        )
        handler_for("evolution")(
            {"action": "start", "execution_id": "hostile-jobs", "agent_id": agent, "choice": choice}
        )
    for _ in range(2):  # and again: the stored failure, nothing run twice
        status, body = call("post_job", **job_event(case.name, {"job_id": "provoked"}))
        assert status == 422 and body["error"] == "GuestError", body
        assert case.reason in body["message"], body
    (kpi,) = deps.store.list_kpis(case.name)
    assert not kpi.success and kpi.score is None and case.reason in kpi.reason
    assert deps.store.find_job(case.name, "provoked").outcome == "failed"
    deps.policy = deps.sandbox.policy = SandboxPolicy()
    status, body = call("post_job", **job_event(CARTPOLE, {"job_id": "after-hostile"}))
    assert status == 200 and body["outcome"] == "recorded", body


# -- per-item outcomes for the hold-out gate ----------------------------------------------------
class SecondAgentAnswersNaN:
    """The sandboxed agent, with the second genome's every answer replaced by NaN."""

    def __init__(self, inner):
        self.inner = inner

    def prepare(self, genomes, n_obs, shared):
        self.rows = len(genomes)
        self.inner.prepare(genomes, n_obs, shared)

    def act(self, obs):
        out = np.array(self.inner.act(obs), dtype=np.float32).reshape(self.rows, -1)
        out[1] = np.nan
        return out


def test_suite_results_carry_per_item_outcomes_with_nan_rows_for_failed_genomes(live):
    from chimera.services.execution import load_runtime

    pole = CartPole(train_episodes=3, holdout_episodes=4)
    policy = load_runtime(live, live.store.get_agent(CARTPOLE))
    genomes = np.array([BALANCER, (0.0,) * 5], dtype=np.float32)
    for split in ("train", "holdout"):
        r = pole.evaluate(policy, genomes, seed=5, split=split)
        episodes = 3 if split == "train" else 4
        assert r.items.shape == (2, episodes) and (r.items[1] < 20).all()
        np.testing.assert_allclose(r.items.mean(axis=1), r.score)

    bc = BreastCancer()
    policy = load_runtime(live, live.store.get_agent(CLASSIFIER))
    genomes = np.array([classifier_genes(), (0.0,) * 31], dtype=np.float32)
    data = _breast_cancer_split()
    for split, y in (("train", data.y_train), ("holdout", data.y_holdout)):
        r = bc.evaluate(policy, genomes, seed=0, split=split)
        assert r.items.shape == (2, len(y)) and set(np.unique(r.items)) <= {0.0, 1.0}
        np.testing.assert_allclose(r.items.mean(axis=1), r.score)
        np.testing.assert_array_equal(r.items[1], (y == 0).astype(float))  # always class 0

    # A genome whose answers are NaN fails alone: its row of items is NaN.
    genomes = np.array([classifier_genes(), (0.0,) * 31, classifier_genes()], dtype=np.float32)
    r = bc.evaluate(SecondAgentAnswersNaN(policy), genomes, seed=0, split="holdout")
    assert set(r.failures) == {1} and np.isnan(r.items[1]).all()
    assert not np.isnan(r.items[[0, 2]]).any() and math.isnan(r.score[1])
