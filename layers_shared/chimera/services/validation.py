"""Layer 3: validate module versions and genomes (default deny) and gate champions.

`validate` checks an agent's pending module version (compile, ABI, genome and observation
lengths, one smoke call of each entry point within the manifest's limits, the live genomes
against its manifest). Only if it passes does it become live, in one conditional save; if it
fails, the rejection and its problems are recorded and the live version keeps serving. The
result says whether this cycle may evolve the agent: with a live version that passes, yes
(even when a new upload was just rejected); with none, the agent is invalid.

Safe to run twice: a retry finds the version already live or already rejected and answers
the same; the decision is keyed by agent.
"""

from __future__ import annotations

import math

import numpy as np

from chimera.domain.errors import ConflictError, NotFoundError, ValidationFailedError
from chimera.domain.models import (
    Agent,
    AgentManifest,
    Decision,
    GateMode,
    ModuleRejection,
    ModuleVersion,
    utcnow,
)
from chimera.domain.sandbox import GuestError, module_problems
from chimera.domain.statistics import Moments, paired_test
from chimera.domain.suites import SUITES, get_suite
from chimera.ports import AgentRuntime
from chimera.services import modules
from chimera.services.contracts import GateRequest, GateResult, ValidateRequest, ValidateResult
from chimera.services.deps import Deps

SAVE_ATTEMPTS = 5


def validate(req: ValidateRequest, deps: Deps) -> ValidateResult:
    for _ in range(SAVE_ATTEMPTS):
        agent = deps.store.get_agent(req.agent_id)
        try:
            return _validate(req, agent, deps)
        except ConflictError:
            continue  # discovery registered a newer version meanwhile: validate that one
    raise ConflictError(f"agent {req.agent_id!r} kept changing during validation")


def _validate(req: ValidateRequest, agent: Agent, deps: Deps) -> ValidateResult:
    promoted: ModuleVersion | None = None
    rejected = agent.rejected
    live = agent.live
    if agent.pending is not None:
        pending = agent.pending
        manifest, problems = _pending_problems(pending, deps, req.agent_id)
        if manifest is not None and not problems:
            promoted = pending.model_copy(
                update={"validated_at": utcnow(), "validated_by": req.execution_id}
            )
            deps.store.save_agent(
                agent.model_copy(update={"manifest": manifest, "live": promoted, "pending": None})
            )
            live, rejected = promoted, None
        else:
            rejected = ModuleRejection(
                version=pending.version,
                digest=pending.digest,
                manifest_digest=pending.manifest_digest,
                bundle=pending.bundle,
                problems=tuple(problems),
            )
            deps.store.save_agent(agent.model_copy(update={"pending": None, "rejected": rejected}))
    if live is not None and live.validated_by == req.execution_id:
        promoted = live  # by this call or by an earlier attempt of it: the same decision
    if promoted is not None:
        problems = []
    elif live is not None:  # the live version serves on; it must still pass today's checks
        problems = module_checks(agent.manifest, live, deps, req.agent_id)
    else:  # nothing live and the newest upload rejected: there is nothing to evolve
        assert rejected is not None
        problems = list(rejected.problems)
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="validation",
            summary=_summary(req.agent_id, promoted, live, rejected, problems),
            detail={
                "agent_id": req.agent_id,
                "problems": problems,
                "live_version": live.version if live is not None else None,
                "promoted": promoted.version if promoted is not None else None,
                "rejected": None
                if rejected is None
                else {
                    "version": rejected.version,
                    "bundle": rejected.bundle,
                    "digest": rejected.digest,
                    "problems": list(rejected.problems),
                },
            },
            key=f"validate#{req.agent_id}",  # a retried validation decides once
        )
    )
    return ValidateResult(ok=not problems, problems=problems)


def _summary(
    agent_id: str,
    promoted: ModuleVersion | None,
    live: ModuleVersion | None,
    rejected: ModuleRejection | None,
    problems: list[str],
) -> str:
    if promoted is not None:
        return (
            f"{agent_id}: module v{promoted.version} from bundle {promoted.bundle} valid, now live"
        )
    parts = []
    if rejected is not None:
        parts.append(
            f"module v{rejected.version} from bundle {rejected.bundle} rejected: "
            + "; ".join(rejected.problems)
        )
    if live is None:
        parts.append("no live module: invalid")
    elif problems:
        parts.append(f"live module v{live.version}: " + "; ".join(problems))
    else:
        parts.append(f"live module v{live.version} valid" + (", keeps serving" if rejected else ""))
    return f"{agent_id}: " + "; ".join(parts)


def _pending_problems(
    pending: ModuleVersion, deps: Deps, agent_id: str
) -> tuple[AgentManifest | None, list[str]]:
    try:
        manifest = modules.version_manifest(deps, pending)
    except (NotFoundError, ValidationFailedError) as exc:
        return None, [f"manifest of v{pending.version}: {exc}"]
    return manifest, module_checks(manifest, pending, deps, agent_id)


def module_checks(
    manifest: AgentManifest, version: ModuleVersion, deps: Deps, agent_id: str
) -> list[str]:
    """Every reason `version` may not serve under `manifest` (empty: it may)."""
    problems: list[str] = []
    if manifest.suite not in SUITES:
        problems.append(f"manifest.suite: unknown suite {manifest.suite!r}")
    try:
        wasm = modules.module_bytes(deps, version)
        problems += module_problems(deps.sandbox.inspect(wasm), manifest, deps.policy)
        if not problems:
            runtime = deps.sandbox.instantiate(wasm, manifest.limits)
            if runtime.genome_len != manifest.genome_len:
                problems.append(
                    f"module takes {runtime.genome_len} genes, manifest declares "
                    f"{manifest.genome_len}"
                )
            if runtime.obs_len != manifest.obs_len:
                problems.append(
                    f"module reads {runtime.obs_len} observation values, manifest "
                    f"declares {manifest.obs_len}"
                )
            if not problems:
                problems += _smoke(deps, wasm, manifest, runtime)
    except NotFoundError as exc:
        problems.append(f"module v{version.version}: {exc}")
    except GuestError as exc:
        problems.append(exc.reason)
    alias = deps.store.get_alias(agent_id)
    if alias is not None:
        for number in alias.weights:
            try:
                manifest.check_genes(deps.store.get_genome(agent_id, number).genes)
            except ValidationFailedError as exc:
                problems.append(f"live genome v{number}: {exc}")
    return problems


def _smoke(deps: Deps, wasm: bytes, manifest: AgentManifest, runtime: AgentRuntime) -> list[str]:
    """One call of each entry point on the default genome and a zero observation, within the
    manifest's limits: a module that loops, traps or answers nonsense never goes live."""
    genes = list(manifest.default_genes())
    zeros = [0.0] * manifest.obs_len
    try:
        runtime.prepare(np.array([genes], dtype=np.float32), n_obs=1, shared=False)
        out = runtime.act(np.array([zeros], dtype=np.float32))
        if np.shape(out) != (1, 1):
            return [f"smoke call chimera_act: answered shape {np.shape(out)}, expected (1, 1)"]
    except GuestError as exc:
        return [f"smoke call chimera_act: {exc.reason}"]
    try:  # a fresh instance: predict must work without a prepared population
        runtime = deps.sandbox.instantiate(wasm, manifest.limits)
        answer = runtime.predict({"genome": genes, "observation": zeros})
    except GuestError as exc:
        return [f"smoke call chimera_predict: {exc.reason}"]
    value = answer.get("output")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return [f"smoke call chimera_predict: no finite numeric output (got {str(answer)[:80]})"]
    return []


def _judge(
    req: GateRequest, deps: Deps, mode: GateMode, margin: float
) -> tuple[bool, str, float | None]:
    """Whether the champion may go to a canary, why, and the paired test's p-value."""
    cand, inc = req.candidate, req.incumbent
    if not cand.success:
        return False, f"candidate failed on hold-out: {cand.reason}", None
    try:
        genome = deps.store.get_genome(cand.agent_id, cand.genome_version)
        deps.store.get_agent(cand.agent_id).manifest.check_genes(genome.genes)
    except ValidationFailedError as exc:
        return False, f"candidate genome invalid: {exc}", None
    if inc is None or not inc.success or inc.score is None:
        return True, f"no comparable incumbent; candidate scores {cand.score:.4g}", None
    scores = f"hold-out {cand.score:.4g} vs incumbent {inc.score:.4g}"
    diff = req.difference
    if diff is None or diff.n < 2:
        return False, f"{scores}: no paired hold-out items to judge the difference on", None
    alpha = deps.settings.canary_alpha
    test = paired_test(
        Moments(diff.n, diff.mean, diff.m2),
        alpha=alpha,
        margin=margin if mode == "non_inferiority" else 0.0,
    )
    shown = test.p_value < alpha
    asked = "better" if mode == "improvement" else f"no worse than -{margin:g}"
    evidence = (
        f"{scores}: paired difference {test.difference:+.4g} over {diff.n} items, "
        f"p = {test.p_value:.3g} for {asked} (alpha {alpha:g})"
    )
    if shown:
        return True, evidence, test.p_value
    tie = " (a tie is no reason to change)" if test.difference == 0.0 else ""
    return False, f"{evidence}: not shown{tie}", test.p_value


def gate(req: GateRequest, deps: Deps) -> GateResult:
    """A champion goes to a canary only if it ran cleanly, its genome is valid, and the
    hold-out items show it better than the incumbent (a one-sided paired test; a run started
    with gate "non_inferiority" asks only that it be no worse than the suite's margin)."""
    run = deps.store.get_run(req.run_id)
    margin = get_suite(run.suite).margin
    approved, reason, p_value = _judge(req, deps, run.gate, margin)
    cand = req.candidate
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="validation",
            summary=f"{cand.agent_id} v{cand.genome_version}: {'approved' if approved else 'rejected'}"
            f" ({reason})",
            detail={"run_id": req.run_id, "approved": approved, "gate": run.gate, "p": p_value},
            key=f"gate#{req.run_id}#{cand.genome_version}",  # a retried gate decides once
        )
    )
    return GateResult(approved=approved, reason=reason, p_value=p_value)
