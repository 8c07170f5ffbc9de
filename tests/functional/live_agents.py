"""Set-up shared by functional tests: agents brought live the way the cycle does it."""

from __future__ import annotations


def start_live_cartpole(execution_id: str) -> None:
    """cartpole-linear discovered, validated (its module live) and live on genome v1.

    Through the handlers as the cycle calls them; the agent goes live on its defaults the
    first time a run starts from it.
    """
    from chimera_local.workflows import handler_for

    agent = "cartpole-linear"
    handler_for("discovery")({"action": "discover", "execution_id": execution_id})
    handler_for("validation")(
        {"action": "validate", "execution_id": execution_id, "agent_id": agent}
    )
    choice = handler_for("meta_evolution")(
        {"action": "choose", "execution_id": execution_id, "agent_id": agent}
    )
    handler_for("evolution")(
        {"action": "start", "execution_id": execution_id, "agent_id": agent, "choice": choice}
    )
