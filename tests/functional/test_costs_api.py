"""GET /costs and GET /budget as API Gateway calls them, over a ledger written the way
evolution-run writes it: Place, the segment's generations, CommitCost (handlers, in order)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chimera import runtime
from chimera.domain.errors import BudgetExceededError
from ledger_segments import EX, RUN, segment, two_segments
from live_agents import start_live_cartpole

from chimera_local.workflows import LambdaContext, handler_for
from functions.api import handler as api

EVENTS = Path(__file__).resolve().parents[1] / "events"
CONTEXT = LambdaContext("chimera-api", "arn:aws:lambda:us-east-1:123456789012:function:chimera-api")


def call(name: str, query: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    event = json.loads((EVENTS / f"api_{name}.json").read_text())
    if query is not None:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    response = api.lambda_handler(event, CONTEXT)
    headers = response.get("multiValueHeaders") or {
        k: [v] for k, v in response.get("headers", {}).items()
    }
    assert headers["Content-Type"] == ["application/json"]
    return response["statusCode"], json.loads(response["body"])


@pytest.fixture
def ledger(home, only_cartpole):
    return two_segments()


def period() -> str:
    return f"{runtime.deps().clock.now():%Y-%m}"


def test_costs_of_a_run_page_by_page_with_totals_over_all(ledger):
    first, second = ledger
    status, page = call("get_costs")  # ?run_id=cycle-1.cartpole-linear&limit=1
    assert status == 200, page
    (entry,) = page["entries"]
    assert entry["entry_id"] == first["entry_id"] and entry["status"] == "committed"
    assert entry["placement"] == "lambda" and entry["first_generation"] == 0
    assert entry["estimated_usd"] == pytest.approx(first["estimated_usd"])
    assert entry["reserved_usd"] == pytest.approx(first["reserved_usd"])
    assert entry["actual_usd"] > 0
    assert entry["difference_usd"] == pytest.approx(entry["actual_usd"] - entry["estimated_usd"])
    assert entry["counts"]["generations"] == 1 and entry["counts"]["evaluations"] > 0
    # The evaluator's seconds as the shards measured them, for every evaluation (layer 8).
    assert entry["counts"]["evaluator_s"] > 0
    assert entry["counts"]["measured_evaluations"] == entry["counts"]["evaluations"]
    assert {o["placement"] for o in entry["options"]} >= {"lambda", "batch-gpu-spot"}

    query = {"run_id": RUN, "limit": "1", "cursor": page["next_cursor"]}
    status, rest = call("get_costs", query)
    assert status == 200, rest
    (entry2,) = rest["entries"]
    assert entry2["entry_id"] == second["entry_id"] and entry2["status"] == "reserved"
    assert entry2["actual_usd"] is None and entry2["counts"] == {}
    assert rest["next_cursor"] is None

    totals = page["totals"]
    assert rest["totals"] == totals  # the totals cover every entry, not the page
    assert (totals["entries"], totals["committed"], totals["open"]) == (2, 1, 1)
    assert totals["actual_usd"] == pytest.approx(entry["actual_usd"])
    assert totals["committed_estimated_usd"] == pytest.approx(entry["estimated_usd"])
    assert totals["held_usd"] == pytest.approx(second["reserved_usd"])
    assert totals["actual_over_estimated"] == pytest.approx(
        entry["actual_usd"] / entry["estimated_usd"]
    )
    assert page["by_run"] == {RUN: totals} and page["by_placement"] == {"lambda": totals}


def test_costs_of_the_period_default_to_the_current_month(ledger):
    status, page = call("get_costs", {})
    assert status == 200 and page["period"] == period(), page
    assert [e["entry_id"] for e in page["entries"]] == [
        ledger[0]["entry_id"],
        ledger[1]["entry_id"],
    ]
    status, other = call("get_costs", {"period": "1999-01"})
    assert status == 200 and other["entries"] == [] and other["totals"]["entries"] == 0


def test_budget_shows_spent_reserved_available_and_the_thresholds(ledger):
    first, second = ledger
    status, budget = call("get_budget")  # no period: the current month
    assert status == 200, budget
    _, page = call("get_costs", {"run_id": RUN})
    spent = page["totals"]["actual_usd"]
    settings = runtime.deps().settings
    assert budget["period"] == period() and budget["budget_usd"] == settings.budget_usd
    assert budget["spent_usd"] == pytest.approx(spent, abs=1e-6)
    assert budget["reserved_usd"] == pytest.approx(second["reserved_usd"], abs=1e-6)
    assert budget["held_usd"] == pytest.approx(spent + second["reserved_usd"], abs=2e-6)
    assert budget["available_usd"] == pytest.approx(settings.budget_usd - budget["held_usd"])
    assert budget["fraction_used"] == pytest.approx(spent / settings.budget_usd, abs=1e-6)
    assert budget["thresholds"] == [0.5, 0.8, 1.0] and budget["thresholds_fired"] == []
    status, empty = call("get_budget", {"period": "1999-01"})
    assert status == 200 and (empty["spent_usd"], empty["held_usd"]) == (0.0, 0.0)


def test_a_lowered_budget_shows_the_thresholds_fired(ledger, monkeypatch):
    first, second = ledger
    _, page = call("get_costs", {"run_id": RUN})
    budget_usd = page["totals"]["actual_usd"] / 0.6  # the operator lowers the budget
    monkeypatch.setenv("CHIMERA_BUDGET_USD", repr(budget_usd))
    runtime.deps.cache_clear()
    handler_for("resources")({"action": "commit_cost", **EX, "entry_id": second["entry_id"]})
    status, budget = call("get_budget")
    assert status == 200, budget
    assert budget["budget_usd"] == budget_usd and budget["fraction_used"] >= 0.6
    assert budget["thresholds_fired"] == [
        t for t in (0.5, 0.8, 1.0) if budget["spent_usd"] >= t * budget_usd
    ]
    assert budget["available_usd"] == max(0.0, budget_usd - budget["held_usd"])


def test_a_refused_placement_holds_nothing(home, only_cartpole, monkeypatch):
    monkeypatch.setenv("CHIMERA_BUDGET_USD", "0.000001")  # no estimate fits
    runtime.deps.cache_clear()
    start_live_cartpole("cycle-1")
    with pytest.raises(BudgetExceededError):
        segment(0)
    status, budget = call("get_budget")
    assert status == 200 and budget["held_usd"] == 0.0 and budget["fraction_used"] == 0.0
    status, page = call("get_costs", {"run_id": RUN})
    assert status == 200 and page["entries"] == [] and page["totals"]["entries"] == 0


@pytest.mark.parametrize(
    ("name", "query", "field"),
    [
        ("get_costs_bad_period", None, "period"),  # ?period=2026-13
        ("get_costs", {"period": "November"}, "period"),
        ("get_costs", {"limit": "0"}, "limit"),
        ("get_costs", {"limit": "many"}, "limit"),
        ("get_costs", {"run_id": "no such run!"}, "run_id"),
        ("get_costs", {"cursor": "not-a-cursor"}, "cursor"),
        ("get_budget", {"period": "2026-1"}, "period"),
    ],
)
def test_bad_query_is_400_naming_the_field(home, name, query, field):
    status, body = call(name, query)
    assert status == 400, body
    assert body["error"] == "ValidationFailedError" and body["field"] == field, body


def test_an_unknown_run_is_404_naming_run_id(home):
    status, body = call("get_costs", {"run_id": "cycle-9.nobody"})
    assert status == 404 and body["field"] == "run_id", body
