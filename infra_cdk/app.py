"""The CDK app: `npx cdk synth` (cdk.json) or `python -m infra_cdk.app`."""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra_cdk.layer_build import build_layer
from infra_cdk.stack import ChimeraStack

REPO = Path(__file__).resolve().parents[1]


def build_app(outdir: str | None = None) -> tuple[cdk.App, ChimeraStack]:
    # cdk.json's feature flags, also when the app is built outside the CLI (tests).
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    app = cdk.App(outdir=outdir, context=context) if outdir else cdk.App(context=context)
    stack = ChimeraStack(
        app,
        "Chimera",
        layer_dir=build_layer(),
        description="Chimera: sandboxed wasm agents that evolve themselves",
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return app, stack


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
