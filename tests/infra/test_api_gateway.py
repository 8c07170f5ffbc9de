"""The REST API is the resolver's OpenAPI document: one method per operation, nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.infra


def _paths(resources: dict[str, dict[str, Any]], rest_api: str) -> dict[str, str]:
    """Logical id of each AWS::ApiGateway::Resource (and the root) -> its full path."""
    parts = {
        lid: r["Properties"]
        for lid, r in resources.items()
        if r["Type"] == "AWS::ApiGateway::Resource"
    }
    out = {rest_api: "/"}

    def path(lid: str) -> str:
        if lid not in out:
            parent = parts[lid]["ParentId"]
            parent_lid = parent["Ref"] if "Ref" in parent else parent["Fn::GetAtt"][0]
            out[lid] = path(parent_lid).rstrip("/") + "/" + parts[lid]["PathPart"]
        return out[lid]

    for lid in parts:
        path(lid)
    return out


def test_every_operation_is_a_method_with_its_security_and_nothing_else(synthesized, repo):
    document = json.loads((repo / "docs" / "openapi.json").read_text())
    expected = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            (scheme,) = {name for req in operation["security"] for name in req}
            expected[(path, method.upper())] = scheme
    assert len(expected) == 15  # GET /costs and GET /budget: layer 8

    resources = synthesized.resources
    (rest_api,) = [lid for lid, r in resources.items() if r["Type"] == "AWS::ApiGateway::RestApi"]
    paths = _paths(resources, rest_api)
    api_fn = synthesized.logical_id(synthesized.stack.node.find_child("Functions").api)
    found = {}
    for lid, r in resources.items():
        if r["Type"] != "AWS::ApiGateway::Method":
            continue
        props = r["Properties"]
        parent = props["ResourceId"]
        parent_lid = parent["Ref"] if "Ref" in parent else parent["Fn::GetAtt"][0]
        key = (paths[parent_lid], props["HttpMethod"])
        if props.get("ApiKeyRequired"):
            assert props.get("AuthorizationType", "NONE") == "NONE", lid
            found[key] = "apiKey"
        else:
            assert props["AuthorizationType"] == "AWS_IAM", lid
            found[key] = "iam"
        integration = props["Integration"]
        assert integration["Type"] == "AWS_PROXY" and integration["IntegrationHttpMethod"] == "POST"
        uri = json.dumps(integration["Uri"])
        assert f'"{api_fn}"' in uri and "lambda:path/2015-03-31/functions/" in uri, lid
        assert "RequestModels" not in props and "RequestValidatorId" not in props
    assert found == expected
    assert not [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::Model"]


def test_the_document_built_is_the_resolvers(repo):
    from infra_cdk.constructs.api import openapi

    assert openapi() == json.loads((repo / "docs" / "openapi.json").read_text())


def test_only_api_gateway_invokes_the_api_function_and_clients_have_a_plan(synthesized):
    template = synthesized.template
    api_fn = synthesized.logical_id(synthesized.stack.node.find_child("Functions").api)
    permissions = template.find_resources(
        "AWS::Lambda::Permission",
        {"Properties": {"FunctionName": {"Fn::GetAtt": [api_fn, "Arn"]}}},
    )  # (other functions' permissions: e.g. the guardrail alarms' rule invokes Refinement)
    assert permissions, "API Gateway needs permission to invoke the API function"
    for permission in permissions.values():
        props = permission["Properties"]
        assert props["Principal"] == "apigateway.amazonaws.com"
    template.resource_count_is("AWS::ApiGateway::UsagePlan", 1)
    template.resource_count_is("AWS::ApiGateway::ApiKey", 1)
    template.resource_count_is("AWS::ApiGateway::UsagePlanKey", 1)


def test_an_operation_without_one_known_scheme_is_refused():
    from infra_cdk.constructs.api import authorization

    assert authorization({"security": [{"iam": []}]}) == "iam"
    assert authorization({"security": [{"apiKey": []}]}) == "apiKey"
    for bad in (
        {},
        {"security": []},
        {"security": [{"iam": []}, {"apiKey": []}]},
        {"security": [{"oauth": []}]},
    ):
        with pytest.raises(ValueError):
            authorization({"operationId": "x", **bad})
