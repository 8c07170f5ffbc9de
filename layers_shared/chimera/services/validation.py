"""Layer 3: validate modules and genomes (default deny) and gate promotions."""

from __future__ import annotations

from chimera.domain.errors import ValidationFailedError
from chimera.domain.models import Decision
from chimera.domain.sandbox import GuestError, module_problems
from chimera.domain.suites import SUITES
from chimera.services.contracts import GateRequest, GateResult, ValidateRequest, ValidateResult
from chimera.services.deps import Deps


def validate(req: ValidateRequest, deps: Deps) -> ValidateResult:
    agent = deps.store.get_agent(req.agent_id)
    manifest = agent.manifest
    problems: list[str] = []
    if manifest.suite not in SUITES:
        problems.append(f"manifest.suite: unknown suite {manifest.suite!r}")
    try:
        wasm = deps.artifacts.read(agent.module_key)
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
    except GuestError as exc:
        problems.append(exc.reason)
    alias = deps.store.get_alias(req.agent_id)
    if alias is not None:
        for version in alias.weights:
            try:
                manifest.check_genes(deps.store.get_genome(req.agent_id, version).genes)
            except ValidationFailedError as exc:
                problems.append(f"live genome v{version}: {exc}")
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="validation",
            summary=f"{req.agent_id}: " + ("valid" if not problems else "; ".join(problems)),
            detail={"agent_id": req.agent_id, "problems": problems},
        )
    )
    return ValidateResult(ok=not problems, problems=problems)


def gate(req: GateRequest, deps: Deps) -> GateResult:
    """A candidate takes traffic only if it ran cleanly and is no worse on unseen data."""
    cand, inc = req.candidate, req.incumbent
    agent = deps.store.get_agent(cand.agent_id)
    if not cand.success:
        approved, reason = False, f"candidate failed on hold-out: {cand.reason}"
    else:
        try:
            agent.manifest.check_genes(
                deps.store.get_genome(cand.agent_id, cand.genome_version).genes
            )
            bounds_ok, why = True, ""
        except ValidationFailedError as exc:
            bounds_ok, why = False, str(exc)
        if not bounds_ok:
            approved, reason = False, f"candidate genome invalid: {why}"
        elif inc is None or not inc.success or inc.score is None:
            approved, reason = True, f"no comparable incumbent; candidate scores {cand.score:.4g}"
        elif cand.score is not None and cand.score >= inc.score:
            approved, reason = True, f"hold-out {cand.score:.4g} >= incumbent {inc.score:.4g}"
        else:
            approved, reason = False, f"hold-out {cand.score:.4g} < incumbent {inc.score:.4g}"
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="validation",
            summary=f"{cand.agent_id} v{cand.genome_version}: {'approved' if approved else 'rejected'}"
            f" ({reason})",
            detail={"run_id": req.run_id, "approved": approved},
        )
    )
    return GateResult(approved=approved, reason=reason)
