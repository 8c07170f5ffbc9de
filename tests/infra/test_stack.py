"""Infrastructure: the synthesized template, cdk-nag, cfn-lint, Lambda size, the pinned CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk.assertions import Match
from chimera.catalog import LAYERS, STATE_MACHINES

pytestmark = pytest.mark.infra


def test_one_lambda_per_layer_and_the_api_on_the_shared_layer(synthesized):
    functions = synthesized.template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "handler.lambda_handler"}}
    )
    assert len(functions) == len(LAYERS) + 1 == 9  # the eight layers and the API
    for fn in functions.values():
        props = fn["Properties"]
        assert props["Runtime"] in ("python3.12", "python3.13")
        assert len(props["Layers"]) == 1
        assert props["Environment"]["Variables"]["CHIMERA_BACKEND"] == "aws"
        assert props["TracingConfig"] == {"Mode": "Active"}


def test_table_is_the_system_of_record(synthesized):
    template = synthesized.template
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": Match.object_like({"SSEEnabled": True, "SSEType": "KMS"}),
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        },
    )


def test_state_machines_are_the_checked_in_asl(synthesized, repo):
    import re

    machines = synthesized.template.find_resources("AWS::StepFunctions::StateMachine")
    assert len(machines) == len(STATE_MACHINES)
    texts = {(repo / "statemachines" / f"{n}.asl.json").read_text() for n in STATE_MACHINES}
    for m in machines.values():
        props = m["Properties"]
        assert props["DefinitionString"] in texts  # deployed as written
        needed = set(re.findall(r"\$\{(\w+)\}", props["DefinitionString"]))
        assert needed <= set(props["DefinitionSubstitutions"])
        assert props["TracingConfiguration"] == {"Enabled": True}
        assert props["LoggingConfiguration"]["Level"] == "ALL"


def test_events_schedule_and_kpi_route(synthesized):
    template = synthesized.template
    template.resource_count_is("AWS::Events::EventBus", 1)
    template.has_resource_properties("AWS::Events::Rule", {"ScheduleExpression": "rate(1 day)"})
    template.has_resource_properties(
        "AWS::Events::Rule",
        {"EventPattern": {"source": ["chimera"], "detail-type": ["KpiRecorded"]}},
    )
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping", {"FunctionResponseTypes": ["ReportBatchItemFailures"]}
    )


def test_batch_gpu_sagemaker_and_dashboard(synthesized):
    template = synthesized.template
    template.has_resource_properties(
        "AWS::Batch::ComputeEnvironment",
        {"ComputeResources": Match.object_like({"Type": "SPOT", "MinvCpus": 0})},
    )
    template.resource_count_is("AWS::Batch::JobQueue", 1)
    template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "ContainerProperties": Match.object_like(
                {"ResourceRequirements": Match.array_with([{"Type": "GPU", "Value": "1"}])}
            )
        },
    )
    template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [
                    Match.object_like({"Principal": {"Service": "sagemaker.amazonaws.com"}})
                ],
                "Version": "2012-10-17",
            }
        },
    )
    template.resource_count_is("AWS::CloudWatch::Dashboard", 1)
    assert len(template.find_resources("AWS::CloudWatch::Alarm")) >= 3


def test_no_wildcard_actions(synthesized):
    for policy in synthesized.template.find_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
            assert "*" not in actions and not any(a.endswith(":*") for a in actions), statement


def test_cfn_lint_passes(synthesized, repo):
    path = synthesized.path
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "cfn-lint"),
            "--config-file",
            str(repo / ".cfnlintrc.yaml"),
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_lambda_bundle_fits_250_mb(repo):
    from infra_cdk.layer_build import ZIP_LIMIT, build_layer, unzipped_size

    layer = build_layer()
    assert (layer / "python" / "chimera" / "data" / "breast_cancer_split.npz").exists()
    for package in [package for _, package, _ in LAYERS] + ["api"]:
        total = unzipped_size(layer) + unzipped_size(repo / "functions" / package)
        assert total < ZIP_LIMIT, f"{package}: {total / 2**20:.1f} MiB unzipped"


def test_packaged_split_equals_scikit_learns(tmp_path):
    import numpy as np
    from chimera.domain import suites

    suites.write_breast_cancer_split(tmp_path / "split.npz")
    with np.load(tmp_path / "split.npz") as packaged:
        for key, value in zip(suites._SPLIT_KEYS, suites._split_with_sklearn(), strict=True):
            np.testing.assert_array_equal(packaged[key], value)


@pytest.mark.skipif(shutil.which("npx") is None, reason="node is not installed")
def test_pinned_cdk_cli_synthesizes_offline(repo, tmp_path):
    if not (repo / "node_modules" / ".bin" / "cdk").exists():
        pytest.skip("run `npm ci` first (make test does)")
    env = {
        "PATH": f"{repo / '.venv' / 'bin'}:/usr/bin:/bin:/usr/local/bin",
        "HOME": str(tmp_path),
        "CDK_DISABLE_VERSION_CHECK": "1",
    }
    proc = subprocess.run(
        [
            "npx",
            "--no-install",
            "cdk",
            "synth",
            "--quiet",
            "--output",
            str(tmp_path / "out"),
            "--no-notices",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "Chimera.template.json").exists()
