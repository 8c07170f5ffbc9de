"""The genome schema: float, int and categorical genes, and how a vector is checked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from chimera.domain.errors import ValidationFailedError
from chimera.domain.genome import GeneSpec, check_genes, default_genes
from chimera.domain.models import AgentManifest
from pydantic import ValidationError

AGENTS = Path(__file__).resolve().parents[2] / "layers_shared" / "agents"

SPECS = (
    GeneSpec(name="w", low=-1.0, high=1.0),
    GeneSpec(name="depth", type="int", low=1, high=8, default=3),
    GeneSpec(name="act", type="categorical", choices=("relu", "tanh", "gelu"), default=2),
)


@pytest.mark.parametrize(
    "path", sorted(AGENTS.glob("*/manifest.json")), ids=lambda p: p.parent.name
)
def test_bundled_manifests_still_validate(path: Path):
    manifest = AgentManifest.model_validate_json(path.read_text())
    assert all(g.type == "float" for g in manifest.genome)
    manifest.check_genes(manifest.default_genes())


def test_float_gene_is_the_default_type():
    g = GeneSpec(name="w", low=-2, high=2, default=0.5)
    assert g.type == "float" and not g.discrete and g.choices is None
    assert g.repair(3.0) == 2.0 and g.repair(0.25) == 0.25 and g.decode(0.25) == 0.25


def test_int_gene():
    g = SPECS[1]
    assert g.discrete and g.repair(4.4) == 4.0 and g.repair(4.5) == 5.0 and g.repair(-7) == 1.0
    assert g.decode(5.0) == 5 and isinstance(g.decode(5.0), int)
    with pytest.raises(ValidationFailedError, match=r"genes\.depth: 2\.5 is not a whole number"):
        g.check(2.5)


def test_categorical_gene_is_an_index_into_choices():
    g = SPECS[2]
    assert (g.low, g.high) == (0.0, 2.0)
    assert g.decode(1.0) == "tanh" and g.repair(9.0) == 2.0 and g.repair(0.4) == 0.0
    with pytest.raises(ValidationFailedError, match=r"genes\.act: 3\.0 outside \[0\.0, 2\.0\]"):
        g.check(3.0)
    again = GeneSpec.model_validate(json.loads(g.model_dump_json()))
    assert again == g


def test_repair_refuses_non_finite():
    with pytest.raises(ValueError, match=r"genes\.w: nan is not finite"):
        SPECS[0].repair(math.nan)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "w", "low": 1, "high": 1}, "low must be finite and below high"),
        ({"name": "w", "low": 0, "high": math.inf}, "low must be finite"),
        ({"name": "w", "low": 0, "high": 1, "default": 2}, "default outside"),
        ({"name": "9w", "low": 0, "high": 1}, "name"),
        ({"name": "w", "type": "bool", "low": 0, "high": 1}, "type"),
        ({"name": "n", "type": "int", "low": 0.5, "high": 3}, "whole numbers"),
        ({"name": "n", "type": "int", "low": 0, "high": 3, "default": 1.5}, "whole number"),
        ({"name": "c", "type": "categorical"}, "choices: a categorical gene needs"),
        ({"name": "c", "type": "categorical", "choices": ["a"]}, "choices"),
        ({"name": "c", "type": "categorical", "choices": ["a", "a"]}, "choices must be unique"),
        ({"name": "c", "type": "categorical", "choices": ["a", "b"], "high": 5}, "low/high"),
        ({"name": "c", "type": "categorical", "choices": ["a", "b"], "default": 0.5}, "whole"),
        ({"name": "w", "low": 0, "high": 1, "choices": ["a", "b"]}, "only a categorical"),
        ({"name": "w", "low": 0, "high": 1, "scale": "log"}, "scale"),
    ],
)
def test_invalid_specs_name_what_is_wrong(spec, message):
    with pytest.raises(ValidationError, match=message):
        GeneSpec.model_validate(spec)


def test_check_genes_names_the_gene():
    check_genes(SPECS, default_genes(SPECS))
    assert default_genes(SPECS) == (0.0, 3.0, 2.0)
    with pytest.raises(ValidationFailedError, match="genes: expected 3 values, got 2") as exc:
        check_genes(SPECS, [0.0, 1.0])
    assert exc.value.field == "genes"
    for bad, name in [
        ([2.0, 1.0, 0.0], "genes.w"),
        ([math.nan, 1.0, 0.0], "genes.w"),
        ([0.0, 1.5, 0.0], "genes.depth"),
        ([0.0, 1.0, -1.0], "genes.act"),
        ([0.0, 1.0, "0"], "genes.act"),
    ]:
        with pytest.raises(ValidationFailedError) as exc:
            check_genes(SPECS, bad)
        assert exc.value.field == name
