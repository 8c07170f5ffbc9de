"""The CDK app is synthesized once per test session (cdk-nag runs at synth)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template


@dataclass
class Synthesized:
    template: Template
    path: Path  # Chimera.template.json
    stack: Any  # infra_cdk.stack.ChimeraStack

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return dict(json.loads(self.path.read_text())["Resources"])

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.get_logical_id(construct.node.default_child))


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    from infra_cdk.app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(str(outdir))
    app.synth()  # raises if cdk-nag has an unacknowledged finding
    return Synthesized(Template.from_stack(stack), outdir / "Chimera.template.json", stack)
