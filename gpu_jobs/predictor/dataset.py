"""The predictor's data set: an agent's evaluated candidates, as JSON lines.

One line per evaluated candidate of the stored history:
`{"agent_id", "suite", "run_id", "generation", "genes": [...], "fitness": f, "kpis": {...}}`.
`fitness` is the candidate's first objective; `kpis` holds further objectives
(`objective_1`, ...) and constraint values (`constraint_0`, ...) where the run has them.
Failed candidates, and candidates a pre-screen left out, have no fitness: they are not rows.

`export_history` reads the store through its ports (`list_runs`, `get_generation`) with
`chimera.services.predictors.history_rows` (the same rows the predictor-training state
machine's ExportHistory Lambda writes to the artifact bucket, without torch); `load_dataset`
reads a directory of such files (a SageMaker channel) back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from chimera.domain.errors import ValidationFailedError
from chimera.services.predictors import HistoryStore, history_rows

FILE_NAME = "history.jsonl"


def export_history(store: HistoryStore, agent_id: str, out_dir: Path) -> int:
    """Write the agent's history as `<out_dir>/history.jsonl`; the number of rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = 0
    tmp = out_dir / f".{FILE_NAME}.tmp"
    with tmp.open("w") as f:
        for row in history_rows(store, agent_id):
            f.write(json.dumps(row, allow_nan=False) + "\n")
            rows += 1
    tmp.replace(out_dir / FILE_NAME)
    return rows


@dataclass(frozen=True)
class Dataset:
    agent_id: str | None
    suite: str
    genes: np.ndarray  # (n, G)
    generation: np.ndarray  # (n,)
    targets: np.ndarray  # (n, T): fitness, then the KPIs every row has
    target_names: tuple[str, ...]
    run_ids: tuple[str, ...]  # per row
    gene_names: tuple[str, ...] | None = None  # the manifest's, where the rows name them


def load_dataset(data_dir: Path) -> Dataset:
    """All `*.jsonl` files under `data_dir`; a bad line is a ValidationFailedError naming it."""
    files = sorted(p for p in Path(data_dir).rglob("*.jsonl") if p.is_file())
    if not files:
        raise ValidationFailedError("data", f"no *.jsonl file under {data_dir}")
    rows: list[dict[str, Any]] = []
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                rows.append(_row(line, f"{path.name}:{n}"))
    if len(rows) < 2:
        raise ValidationFailedError("data", f"{len(rows)} row(s) under {data_dir}: too few")
    width = len(rows[0]["genes"])
    suites = {r["suite"] for r in rows}
    if len(suites) != 1:
        raise ValidationFailedError("data.suite", f"one suite per data set, got {sorted(suites)}")
    for r in rows:
        if len(r["genes"]) != width:
            raise ValidationFailedError(
                f"{r['_where']}.genes", f"expected {width} genes, got {len(r['genes'])}"
            )
    named = {tuple(r["gene_names"]) for r in rows if "gene_names" in r}
    if len(named) > 1 or (named and any("gene_names" not in r for r in rows)):
        raise ValidationFailedError(
            "data.gene_names", f"every row names the same genes, got {sorted(named)}"
        )
    common = sorted(set.intersection(*(set(r["kpis"]) for r in rows)))
    agents = {r.get("agent_id") for r in rows}
    return Dataset(
        agent_id=agents.pop() if len(agents) == 1 else None,
        suite=suites.pop(),
        genes=np.array([r["genes"] for r in rows], dtype=np.float64),
        generation=np.array([r["generation"] for r in rows], dtype=np.float64),
        targets=np.array(
            [[r["fitness"], *(r["kpis"][k] for k in common)] for r in rows], dtype=np.float64
        ),
        target_names=("fitness", *common),
        run_ids=tuple(str(r.get("run_id", "")) for r in rows),
        gene_names=named.pop() if named else None,
    )


def _row(line: str, where: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise ValidationFailedError(where, f"not JSON: {exc}") from None
    if not isinstance(row, dict):
        raise ValidationFailedError(where, "not a JSON object")
    for name in ("suite", "genes", "fitness"):
        if name not in row:
            raise ValidationFailedError(f"{where}.{name}", "missing")
    genes = row["genes"]
    if not isinstance(genes, list) or not genes or not all(_finite(g) for g in genes):
        raise ValidationFailedError(f"{where}.genes", "a non-empty list of finite numbers")
    names = row.get("gene_names")
    if names is not None and (
        not isinstance(names, list)
        or len(names) != len(genes)
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise ValidationFailedError(
            f"{where}.gene_names", f"a name for each of the {len(genes)} genes"
        )
    if not _finite(row["fitness"]):
        raise ValidationFailedError(f"{where}.fitness", f"{row['fitness']!r} is not finite")
    generation = row.get("generation", 0)
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise ValidationFailedError(f"{where}.generation", f"{generation!r} is not a count")
    kpis = row.get("kpis", {})
    if not isinstance(kpis, dict) or not all(_finite(v) for v in kpis.values()):
        raise ValidationFailedError(f"{where}.kpis", "an object of finite numbers")
    return {**row, "generation": generation, "kpis": kpis, "_where": where}


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def write_rows(rows: Sequence[dict[str, Any]], out_dir: Path) -> Path:
    """Rows as a data set file (the bench and tests build data sets this way)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILE_NAME
    path.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))
    return path
