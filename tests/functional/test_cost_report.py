"""The cycle report's cost section: each segment estimated against actual, and the budget,
over a ledger written by Place / the segment / CommitCost."""

from __future__ import annotations

import pytest
from chimera import runtime
from ledger_segments import RUN, two_segments

from chimera_local import report


@pytest.fixture
def rep(home, only_cartpole):
    first, second = two_segments()
    ports = runtime.deps()
    period = f"{ports.clock.now():%Y-%m}"
    out = report.collect(ports.store, "cycle-1", "succeeded", 1.0, [], (period, ports.budget_usd))
    return out, first, second, period


def test_the_text_report_shows_estimated_against_actual_and_the_budget(rep):
    out, first, second, period = rep
    done, open_ = out.costs
    assert (done.entry_id, open_.entry_id) == (first["entry_id"], second["entry_id"])
    text = report.text(out)
    assert "Cost (layer 8: estimated against actual):" in text
    assert (
        f"{RUN} generations 0-0 on lambda: est. ${done.estimated_usd:.6f}, actual "
        f"${done.actual_usd:.6f} ({done.difference_usd:+.6f})" in text
    )
    assert f"generations 1-1 on lambda: est. ${open_.estimated_usd:.6f}, actual -" in text
    assert f"open (${open_.reserved_usd:.6f} held)" in text
    assert f"actual ${done.actual_usd:.6f} over 1 committed segment(s)" in text
    budget = out.budget
    assert budget is not None and budget.spent_usd == pytest.approx(done.actual_usd, abs=1e-6)
    assert f"budget {period}: ${budget.budget_usd:.6f}, spent ${budget.spent_usd:.6f}" in text


def test_the_html_report_has_the_cost_table(rep):
    out, *_ = rep
    page = report.to_html(out)
    assert "<h2>Cost</h2>" in page and "<th>actual - estimated</th>" in page
    done = out.costs[0]
    assert f"<td>${done.estimated_usd:.6f}</td><td>${done.actual_usd:.6f}</td>" in page
    assert "committed segments (1; 1 open)" in page


def test_a_report_without_segments_says_so(home, only_cartpole):
    ports = runtime.deps()
    out = report.collect(ports.store, "cycle-0", "succeeded", 1.0, [])
    text = report.text(out)
    assert "no segment was placed" in text and "budget " not in text
