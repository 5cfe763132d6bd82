"""The REST API of endpoints, as an ML engineer scripts it: create, deploy, read state, keys (never for readers),
traffic, update, delete; every refusal a JSON error that says why."""

from __future__ import annotations

import pytest

from endpoints.models import Deployment, Endpoint
from studio.models import ApiToken
from tests.endpoints.conftest import IDENTITY, register_files

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
API = "/api/v1/workspaces/lab/endpoints"


@pytest.fixture
def auth():
    return lambda user: {"Authorization": f"Token {ApiToken.issue(user, 'tests')[1]}"}


@pytest.fixture
def versions(workspace, cast):
    return [register_files(workspace, cast["carol"], "digits", {"prefix.txt": f"v{n}".encode()}) for n in (1, 2)]


def test_create_deploy_read_update_and_delete_over_the_api(client, cast, auth, versions):
    carol = auth(cast["carol"])
    created = client.post(API, {"name": "digits", "description": "digits"}, content_type="application/json",
                          headers=carol)
    assert created.status_code == 201
    assert created.json()["scoring_url"].endswith("/endpoints/lab/digits/score")
    assert created.json()["state"] == "No deployments"
    deployed = client.post(f"{API}/digits/deployments", {
        "name": "blue", "model": "digits@latest", "scoring_script": IDENTITY, "instance_count": 2,
        "compute_target": "local"}, content_type="application/json", headers=carol)
    assert deployed.status_code == 201, deployed.content
    body = deployed.json()
    assert body["model"] == "digits:2" and body["state"] == "Building" and body["traffic"] == 100
    assert body["instance_count"] == 2 and body["request_timeout_ms"] == 5000 and body["max_concurrent_requests"] == 4
    green = client.post(f"{API}/digits/deployments", {
        "name": "green", "model": "digits:1", "scoring_script": IDENTITY, "traffic": 10},
        content_type="application/json", headers=carol)
    assert green.json()["traffic"] == 10
    assert client.get(f"{API}/digits", headers=carol).json()["traffic"] == {"blue": 90, "green": 10}
    patched = client.patch(f"{API}/digits/deployments/green", {"model": "digits:2", "request_timeout_ms": 800},
                           content_type="application/json", headers=carol)
    assert patched.status_code == 200
    assert patched.json()["revision"] == 2 and patched.json()["request_timeout_ms"] == 800
    moved = client.put(f"{API}/digits/traffic", {"traffic": {"green": 100}}, content_type="application/json",
                       headers=carol)
    assert moved.json()["traffic"] == {"green": 100}
    gone = client.delete(f"{API}/digits/deployments/blue", headers=carol)
    assert gone.status_code == 200 and Deployment.objects.get(name="blue").state == "Deleting"
    events = client.get(f"{API}/digits/events", headers=carol).json()
    assert [e["text"] for e in events][:2] == ["Deployment deleted: its instances stop.",
                                               "Traffic: green 100 %."]
    assert client.delete(f"{API}/digits", headers=carol).json() == {"deleted": "digits"}
    assert client.get(f"{API}/digits", headers=carol).status_code == 404


def test_keys_are_for_writers_and_regenerating_one_changes_only_it(client, cast, auth, versions):
    client.post(API, {"name": "digits"}, content_type="application/json", headers=auth(cast["carol"]))
    assert client.get(f"{API}/digits/keys", headers=auth(cast["bob"])).status_code == 403
    assert "primary" not in str(client.get(f"{API}/digits", headers=auth(cast["bob"])).json())
    before = client.get(f"{API}/digits/keys", headers=auth(cast["carol"])).json()
    after = client.post(f"{API}/digits/keys/regenerate", {"key": "primary"}, content_type="application/json",
                        headers=auth(cast["alice"])).json()
    assert after["primary"] != before["primary"] and after["secondary"] == before["secondary"]
    wrong = client.post(f"{API}/digits/keys/regenerate", {"key": "tertiary"}, content_type="application/json",
                        headers=auth(cast["alice"]))
    assert wrong.status_code == 400 and wrong.json()["error"] == "'tertiary' is not a key: say primary or secondary."


@pytest.mark.parametrize(("payload", "status", "message"), [
    ({"name": "b", "model": "nope:1", "scoring_script": IDENTITY}, 400, "No model named 'nope' in this workspace."),
    ({"name": "b", "model": "digits:1"}, 400, "digits:1 is not an MLflow model"),
    ({"name": "b", "model": "digits:1", "scoring_script": "def run(:"}, 400, "does not compile"),
    ({"name": "b", "model": "digits:1", "scoring_script": "x = 1"}, 400, "must define init() and run(...)"),
    ({"name": "b", "model": "digits:1", "scoring_script": IDENTITY, "compute_target": "gpu"}, 404,
     "No compute target named 'gpu'"),
    ({"name": "b", "model": "digits:1", "scoring_script": IDENTITY, "environment": "nope"}, 404,
     "No environment 'nope'"),
    ({"name": "b" * 64, "model": "digits:1", "scoring_script": IDENTITY}, 400, "at most 63"),
    ({"name": "b", "model": "digits:1", "scoring_script": IDENTITY, "instance_count": 0}, 400, "instance_count"),
    ({"name": "b", "model": "digits:1", "scoring_script": IDENTITY, "extra_models": ["digits:2"]}, 400,
     "The model digits is named twice"),
    ({"name": "b", "model": "digits:1", "scoring_script": "x" * (1024 * 1024 + 1) + "\ndef init(): pass\ndef run(d): pass"},
     413, "at most 1,048,576"),
])
def test_a_deployment_that_cannot_be_is_refused_with_the_reason(client, cast, auth, versions, payload, status,
                                                                 message):
    client.post(API, {"name": "digits"}, content_type="application/json", headers=auth(cast["carol"]))
    response = client.post(f"{API}/digits/deployments", payload, content_type="application/json",
                           headers=auth(cast["carol"]))
    assert response.status_code == status, response.content
    assert message in response.json()["error"]
    assert not Deployment.objects.exists()


def test_traffic_that_does_not_add_up_is_refused_and_the_split_kept(client, cast, auth, versions):
    carol = auth(cast["carol"])
    client.post(API, {"name": "digits"}, content_type="application/json", headers=carol)
    for name in ("blue", "green"):
        client.post(f"{API}/digits/deployments", {"name": name, "model": "digits:1", "scoring_script": IDENTITY},
                    content_type="application/json", headers=carol)
    for payload, message in (({"traffic": {"blue": 50, "green": 40}}, "adds up to 90 %"),
                             ({"traffic": {"red": 100}}, "'red', which is not a deployment"),
                             ({"mirror": {"green": 51}}, "at most 50 %"),
                             ({"traffic": {"blue": 100.5}}, "traffic.blue: Input should be a valid integer")):
        response = client.put(f"{API}/digits/traffic", payload, content_type="application/json", headers=carol)
        assert response.status_code == 400 and message in response.json()["error"], response.content
    assert Endpoint.objects.get().traffic == {"blue": 100}
    duplicate = client.post(API, {"name": "digits"}, content_type="application/json", headers=carol)
    assert duplicate.status_code == 409
