"""Pattern-recognition state over the single-table layout of `chimera.adapters.kv`.

A mixin of `KeyValueStore` (as `kv_experiments`): it uses only that class's primitives.
Layout: `DETECT#<agent>` / `vNNNNNNNN`, one item per agent and genome version, holding a
`chimera.domain.anomalies.DetectorState` (its detectors as JSON, its `last_window`
watermark) with `rev` = its revision. Every save is conditional on the revision read and
carries the `AnomalyDetected` events the fed windows produced, in the same transaction (the
outbox): a retried or concurrent ingest announces each detection once and feeds no window
twice. A state that does not parse is noted under QUARANTINE and handed back fresh at the
damaged item's revision, to be rebuilt from the rollups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from chimera.domain.anomalies import DetectorState
from chimera.domain.errors import CorruptStateError
from chimera.domain.events import Event

if TYPE_CHECKING:
    from chimera.adapters.kv import Put, Row, Versioned, Write

T = TypeVar("T")
Pair = tuple[str, int]  # (agent id, genome version)


def _key(agent_id: str, genome_version: int) -> tuple[str, str]:
    return f"DETECT#{agent_id}", f"v{genome_version:08d}"


class DetectorItems:
    """Implements chimera.ports.DetectorStore for a KeyValueStore."""

    # -- what KeyValueStore provides (declared for the type checker) ----------------------
    if TYPE_CHECKING:

        def _rows(self, pk: str, **options: Any) -> list[Row]: ...
        def _read(self, parse: Callable[[str], T], row: Row) -> T: ...
        def _read_all(self, parse: Callable[[str], T], rows: Sequence[Row]) -> list[T]: ...
        def _quarantine(self, row: Row, reason: str) -> None: ...
        def _get_many(
            self, keys: Sequence[tuple[str, str]]
        ) -> dict[tuple[str, str], Versioned]: ...
        def _write(self, writes: Sequence[Write]) -> None: ...
        @staticmethod
        def _outbox(events: Sequence[Event]) -> list[Put]: ...

    def get_detector_states(
        self, pairs: Sequence[Pair], window_s: int
    ) -> dict[Pair, DetectorState]:
        from chimera.adapters.kv import Row

        keys = {pair: _key(*pair) for pair in dict.fromkeys(pairs)}
        out: dict[Pair, DetectorState] = {}
        for start in range(0, len(keys), 100):
            batch = list(keys.items())[start : start + 100]
            found = self._get_many([key for _, key in batch])
            for pair, key in batch:
                item = found.get(key)
                if item is None:
                    continue
                rev = item.rev or 0
                row = Row(*key, item.doc)
                try:
                    state = self._read(DetectorState.model_validate_json, row)
                except CorruptStateError as exc:
                    self._quarantine(row, exc.reason)
                    out[pair] = DetectorState.fresh(*pair, window_s, revision=max(rev, 1))
                    continue
                if state.window_s != window_s:  # the deployment changed its window length
                    out[pair] = DetectorState.fresh(*pair, window_s, revision=max(rev, 1))
                    continue
                out[pair] = state.model_copy(update={"revision": rev})
        return out

    def save_detector_state(
        self, state: DetectorState, events: Sequence[Event] = ()
    ) -> DetectorState:
        from chimera.adapters.kv import ABSENT, Put

        nxt = state.model_copy(update={"revision": state.revision + 1, "replaying": False})
        put = Put(
            *_key(state.agent_id, state.genome_version),
            nxt.model_dump_json(),
            rev=nxt.revision,
            condition=ABSENT if state.revision == 0 else state.revision,
        )
        self._write([put, *self._outbox(events)])
        return nxt

    def list_detector_states(self, agent_id: str) -> list[DetectorState]:
        rows = self._rows(f"DETECT#{agent_id}")
        return self._read_all(DetectorState.model_validate_json, rows)


PARSERS = (("DETECT#", DetectorState.model_validate_json),)
