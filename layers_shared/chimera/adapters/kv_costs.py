"""Layer 8's ledger and budget over the single-table layout of `chimera.adapters.kv`.

A mixin of `KeyValueStore` (as `kv_detectors`): it uses only that class's primitives.
Layout:

- `LEDGER#<run>` / `<entry id>`: a `chimera.domain.budget.LedgerEntry`, `rev` its revision;
  gsi1 `LEDGER#<YYYY-MM>` / `<reserved at>#<entry id>` (a period's entries by time);
- `BUDGET#<YYYY-MM>` / `HELD` and `SPENT`: numeric counters in whole micro-dollars (integers:
  no float drift between the counter and the sum of its entries);
- `BUDGET#<YYYY-MM>` / `THRESHOLD#0.50`: a threshold that has fired, written put-if-absent
  with its `BudgetThresholdReached` event (the outbox) in one transaction: once each.

`reserve` puts the entry (if absent) and adds its amount to HELD under the budget's ceiling in
one transaction: two processes cannot both take the budget's last dollar, and a retry finds
its entry and charges nothing twice. `settle` moves an entry from reserved to committed at
its revision and adds (actual - reserved) to HELD and the actual to SPENT, in one transaction:
settled twice, it charges once. An actual above its reservation is recorded in full (the
money is spent); HELD may then pass the budget by that much and every later reservation is
refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from chimera.domain.budget import BudgetState, LedgerEntry, crossed
from chimera.domain.errors import BudgetExceededError, ConflictError, NotFoundError
from chimera.domain.events import BudgetThresholdReached, Event
from chimera.domain.prices import micro_usd

if TYPE_CHECKING:
    from chimera.adapters.kv import Put, Row, Versioned, Write

T = TypeVar("T")
SETTLE_RETRIES = 8


def _key(run_id: str, entry_id: str) -> tuple[str, str]:
    return f"LEDGER#{run_id}", entry_id


def _usd(micro: float) -> float:
    return round(micro) / 1_000_000


class CostItems:
    """Implements chimera.ports.CostLedger for a KeyValueStore."""

    if TYPE_CHECKING:

        def _get(self, pk: str, sk: str) -> str | None: ...
        def _get_num(self, pk: str, sk: str) -> float: ...
        def _rows(self, pk: str, **options: Any) -> list[Row]: ...
        def _read(self, parse: Callable[[str], T], row: Row) -> T: ...
        def _read_all(self, parse: Callable[[str], T], rows: Sequence[Row]) -> list[T]: ...
        def _get_many(
            self, keys: Sequence[tuple[str, str]]
        ) -> dict[tuple[str, str], Versioned]: ...
        def _write(self, writes: Sequence[Write]) -> None: ...
        @staticmethod
        def _outbox(events: Sequence[Event]) -> list[Put]: ...

    def _entry_put(self, entry: LedgerEntry, condition: str | int) -> Put:
        from chimera.adapters.kv import Put

        return Put(
            *_key(entry.run_id, entry.entry_id),
            entry.model_dump_json(exclude={"revision"}),
            rev=entry.revision,
            condition=condition,
            gsi1=(f"LEDGER#{entry.period}", f"{entry.reserved_at.isoformat()}#{entry.entry_id}"),
        )

    def get_ledger_entry(self, run_id: str, entry_id: str) -> LedgerEntry | None:
        from chimera.adapters.kv import Row

        key = _key(run_id, entry_id)
        found = self._get_many([key]).get(key)
        if found is None:
            return None
        entry = self._read(LedgerEntry.model_validate_json, Row(*key, found.doc))
        return entry.model_copy(update={"revision": found.rev or 0})

    def reserve(self, entry: LedgerEntry, budget_usd: float) -> tuple[LedgerEntry, bool]:
        """Hold `entry.reserved_usd` against the period's budget; (the entry, True if new).

        A retry (the same run and entry id) returns the stored entry and holds nothing more.
        BudgetExceededError naming budget_usd if the hold would pass the budget.
        """
        from chimera.adapters.kv import ABSENT, Add

        stored = self.get_ledger_entry(entry.run_id, entry.entry_id)
        if stored is not None:
            return stored, False
        new = entry.model_copy(update={"status": "reserved", "revision": 1})
        amount = micro_usd(entry.reserved_usd)
        ceiling = micro_usd(budget_usd)
        try:
            self._write(
                [
                    self._entry_put(new, ABSENT),
                    Add(f"BUDGET#{entry.period}", "HELD", amount, ceiling),
                ]
            )
        except ConflictError as exc:
            stored = self.get_ledger_entry(entry.run_id, entry.entry_id)
            if stored is not None:
                return stored, False  # a concurrent retry reserved it first
            held = self._get_num(f"BUDGET#{entry.period}", "HELD")
            raise BudgetExceededError(
                f"budget_usd: {entry.period} holds ${_usd(held):.6f} of ${budget_usd:.2f}; "
                f"${entry.reserved_usd:.6f} more would pass it"
            ) from exc
        return new, True

    def settle(
        self,
        run_id: str,
        entry_id: str,
        actual_usd: float,
        settled_at: datetime,
        note: str = "",
        detail: dict[str, Any] | None = None,
    ) -> LedgerEntry:
        """Commit the entry's actual cost and release the rest of its reservation.

        Idempotent: an entry already committed is returned as it is (nothing charged again).
        NotFoundError naming entry_id if it was never reserved.
        """
        from chimera.adapters.kv import Add

        actual = micro_usd(actual_usd)
        for _ in range(SETTLE_RETRIES):
            entry = self.get_ledger_entry(run_id, entry_id)
            if entry is None:
                raise NotFoundError("ledger entry", f"{run_id}/{entry_id}", field="entry_id")
            if entry.status == "committed":
                return entry
            done = entry.model_copy(
                update={
                    "status": "committed",
                    "actual_usd": _usd(actual),
                    "settled_at": settled_at,
                    "note": note[:1000],
                    "detail": {**entry.detail, **(detail or {})},
                    "revision": entry.revision + 1,
                }
            )
            budget = f"BUDGET#{entry.period}"
            try:
                self._write(
                    [
                        self._entry_put(done, entry.revision),
                        Add(budget, "HELD", actual - micro_usd(entry.reserved_usd)),
                        Add(budget, "SPENT", actual),
                    ]
                )
            except ConflictError:
                continue  # settled (or changed) meanwhile: read it again
            return done
        raise ConflictError(f"ledger entry {run_id}/{entry_id}: changed {SETTLE_RETRIES} times")

    def list_ledger(
        self, run_id: str | None = None, period: str | None = None
    ) -> list[LedgerEntry]:
        """A run's entries, or a period's (YYYY-MM), oldest first."""
        from chimera.domain.errors import ValidationFailedError

        if run_id is not None:
            rows = self._rows(f"LEDGER#{run_id}")
        elif period is not None:
            rows = self._rows(f"LEDGER#{period}", index=True)
        else:
            raise ValidationFailedError("run_id", "give a run id or a period")
        entries = self._read_all(LedgerEntry.model_validate_json, rows)
        return sorted(entries, key=lambda e: (e.reserved_at, e.entry_id))

    def budget_state(self, period: str, budget_usd: float) -> BudgetState:
        pk = f"BUDGET#{period}"
        fired = tuple(
            float(row.sk.removeprefix("THRESHOLD#")) for row in self._rows(pk, prefix="THRESHOLD#")
        )
        return BudgetState(
            period=period,
            budget_usd=budget_usd,
            held_usd=max(0.0, _usd(self._get_num(pk, "HELD"))),
            spent_usd=max(0.0, _usd(self._get_num(pk, "SPENT"))),
            thresholds_fired=fired,
        )

    def fire_thresholds(self, period: str, budget_usd: float) -> list[float]:
        """Announce each threshold the period's spending has reached, once (put-if-absent
        with its BudgetThresholdReached in one transaction); the thresholds this call fired."""
        from chimera.adapters.kv import ABSENT, Put

        state = self.budget_state(period, budget_usd)
        fired = []
        for threshold in crossed(state.spent_usd, budget_usd, state.thresholds_fired):
            event = BudgetThresholdReached(
                budget_usd=budget_usd, spent_usd=state.spent_usd, threshold=threshold
            )
            marker = Put(
                f"BUDGET#{period}",
                f"THRESHOLD#{threshold:.2f}",
                event.model_dump_json(),
                condition=ABSENT,
            )
            try:
                self._write([marker, *self._outbox([event])])
            except ConflictError:
                continue  # another process fired it
            fired.append(threshold)
        return fired


PARSERS = (("LEDGER#", LedgerEntry.model_validate_json),)
