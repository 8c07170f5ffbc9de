"""Layer 8's ledger and the hard budget of a period (pure).

A segment of work first reserves its worst-case cost against the period's budget; when the
segment's work is known its actual cost is committed and the rest of the reservation released.
A reservation never committed (its process died) expires and is settled by whoever finds it
(`expired`). The store keeps, per period (calendar month, UTC), two counters in whole
micro-dollars: `held` (open reservations plus committed actuals: what the budget caps) and
`spent` (committed actuals: what the thresholds watch).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

THRESHOLDS: tuple[float, ...] = (0.5, 0.8, 1.0)
EntryStatus = Literal["reserved", "committed"]


class LedgerEntry(BaseModel):
    """One segment's cost: estimated and held at placement, actual once its work is known."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    entry_id: str = Field(min_length=1, max_length=200)
    run_id: str = Field(min_length=1, max_length=200)
    execution_id: str = Field(min_length=1, max_length=200)
    period: str = Field(pattern=r"^\d{4}-\d{2}$")
    placement: str = Field(min_length=1, max_length=64)
    status: EntryStatus = "reserved"
    estimated_usd: float = Field(ge=0, le=1_000_000)
    reserved_usd: float = Field(ge=0, le=1_000_000, description="held while reserved")
    actual_usd: float | None = Field(default=None, ge=0, le=1_000_000)
    reserved_at: datetime
    expires_at: datetime
    settled_at: datetime | None = None
    note: str = Field(default="", max_length=1000)
    detail: dict[str, Any] = Field(default={}, max_length=64)
    revision: int = Field(default=0, ge=0)

    def expired(self, now: datetime) -> bool:
        return self.status == "reserved" and now >= self.expires_at


class BudgetState(BaseModel):
    """A period's budget as the store holds it."""

    model_config = ConfigDict(frozen=True)
    period: str
    budget_usd: float = Field(ge=0)
    held_usd: float = Field(ge=0, description="open reservations and committed actuals")
    spent_usd: float = Field(ge=0, description="committed actuals")
    thresholds_fired: tuple[float, ...] = ()

    @property
    def left_usd(self) -> float:
        return max(0.0, self.budget_usd - self.held_usd)


def crossed(spent_usd: float, budget_usd: float, fired: tuple[float, ...]) -> list[float]:
    """The thresholds `spent_usd` has reached that have not fired yet (a zero budget: all)."""
    return [
        t for t in THRESHOLDS if t not in fired and spent_usd >= t * budget_usd and spent_usd > 0
    ]
