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
    # Healthy in the database comes a moment before the gateway's table has the instance (its reload notice)
    wait_until(lambda: call(url, {"x": [1, 2]}, key=keys["primary"])[0] == 200, 10, "the gateway to route")
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


SLEEPY = """\
import json, time

def init():
    pass

def run(raw_data):
    time.sleep(json.loads(raw_data)["sleep"])
    return "slept"
"""


def test_the_gateway_answers_429_past_the_concurrency_limit_and_504_past_the_timeout(workspace, alice, gateway,
                                                                                   controller):
    from concurrent.futures import ThreadPoolExecutor

    version = register_files(workspace, alice, "sleepy", {"prefix.txt": b"-"})
    endpoint = endpoint_services.create_endpoint(workspace, alice, "sleepy")
    deployment = endpoint_services.create_deployment(
        endpoint, alice, "blue", model=f"sleepy:{version.version}", script=("score.py", SLEEPY.encode()),
        compute_target=workspace.compute_targets.get(name="local"), max_concurrent_requests=1,
        request_timeout_ms=1500)
    wait_state(deployment, DeploymentState.HEALTHY, timeout=60)
    key = endpoint_services.keys(endpoint)["primary"]
    url = scoring_url(gateway, endpoint)
    wait_until(lambda: call(url, {"sleep": 0}, key=key)[0] == 200, 10, "the gateway to route")
    with ThreadPoolExecutor(3) as pool:
        statuses = sorted(f.result()[0] for f in [pool.submit(call, url, {"sleep": 0.8}, key=key) for _ in range(3)])
    assert statuses == [200, 429, 429]
    status, _, body = call(url, {"sleep": 3}, key=key)
    assert status == 504 and json.loads(body)["message"] == "Deployment blue did not answer within 1.5 s."
    wait_until(lambda: call(url, {"sleep": 0}, key=key)[0] == 200, 10, "the instance to be free again")
    wait_until(lambda: RequestRecord.objects.filter(endpoint=endpoint, status__in=(429, 504)).count() == 3, 10,
               "the refusals to be recorded")
