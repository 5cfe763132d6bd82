"""Endpoints on the local target (a process per instance in the runs' sandbox), for machines without Docker: the
gateway, the controller and the scoring server for real."""

from __future__ import annotations

import json

import pytest

from endpoints import services as endpoint_services
from endpoints.models import DeploymentState, RequestRecord
from tests.endpoints.conftest import IDENTITY, call, register_files, scoring_url, wait_state
from tests.services import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_local_deployment_scores_with_its_key_and_only_with_it(workspace, alice, gateway, controller):
    version = register_files(workspace, alice, "echo", {"prefix.txt": b"v1"})
    endpoint = endpoint_services.create_endpoint(workspace, alice, "echo")
    deployment = endpoint_services.create_deployment(
        endpoint, alice, "blue", model=f"echo:{version.version}", compute_target=workspace.compute_targets.get(
            name="local"), script=("score.py", IDENTITY.encode()))
    wait_state(deployment, DeploymentState.HEALTHY, timeout=60)
    keys = endpoint_services.keys(endpoint)
    url = scoring_url(gateway, endpoint)
    status, headers, body = call(url, {"x": [1, 2]}, key=keys["primary"])
    assert status == 200, body
    assert json.loads(body) == {"echo": {"x": [1, 2]}, "by": "v1"}
    assert headers.get("azureml-model-deployment") == "blue"
    assert call(url, {"x": 1}, key=keys["secondary"])[0] == 200
    assert call(url, {"x": 1})[0] == 401
    assert call(url, {"x": 1}, key="wrong")[0] == 401
    endpoint_services.regenerate_key(endpoint, "primary", alice)
    wait_until(lambda: call(url, {"x": 1}, key=keys["primary"])[0] == 401, 5, "the old key to fail")
    wait_until(lambda: RequestRecord.objects.filter(endpoint=endpoint, status=200).count() >= 2, 10,
               "the requests to be recorded")
