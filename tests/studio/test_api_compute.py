"""Compute targets through the REST API: the list, adding one (validated as the Compute page's form does), one
target, testing its engine, and removing one no run uses."""

from __future__ import annotations

import json

import pytest

from runs.models import Run
from studio.models import ApiToken, ComputeTarget, Workspace
from tests.conftest import make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]

API = "/api/v1/workspaces/lab/compute"
KEY = "-----BEGIN PRIVATE KEY-----\nnot really a key\n-----END PRIVATE KEY-----"


def token_for(user) -> dict:
    return {"Authorization": f"Token {ApiToken.issue(user, 'tests')[1]}"}


def create(client, user, **fields):
    return client.post(API, json.dumps(fields), content_type="application/json", headers=token_for(user))


@pytest.fixture
def gpu(workspace) -> ComputeTarget:
    return ComputeTarget.objects.create(workspace=workspace, name="gpu", kind=ComputeTarget.Kind.DOCKER,
                                        docker_url="unix:///nonexistent.sock", queue="docker-gpu", cpu_limit=2.0,
                                        memory_limit_mb=4096, gpus="all")


# Reading ------------------------------------------------------------------------------------------------------------


def test_it_lists_the_workspaces_targets_with_their_run_counts(client, cast, workspace, gpu):
    make_run(workspace, cast["carol"])
    make_run(workspace, cast["carol"])
    response = client.get(API, headers=token_for(cast["bob"]))
    assert response.status_code == 200
    targets = {target["name"]: target for target in response.json()}
    assert list(targets) == ["gpu", "local"]
    assert targets["local"]["kind"] == "local" and targets["local"]["builtin"] is True
    assert targets["local"]["runs"] == 2 and targets["local"]["queue"] == "local"
    assert targets["gpu"] == {
        "id": gpu.pk, "name": "gpu", "kind": "docker", "queue": "docker-gpu", "python_path": "",
        "docker_url": "unix:///nonexistent.sock", "tls": False, "cpu_limit": 2.0, "memory_limit_mb": 4096,
        "gpus": "all", "shm_size_mb": None, "callback_url": "", "runs": 0, "builtin": False,
    }


def test_it_lists_only_the_workspaces_own_targets(client, cast, workspace):
    ComputeTarget.objects.create(workspace=Workspace.objects.get(name="elsewhere"), name="theirs")
    assert [target["name"] for target in client.get(API, headers=token_for(cast["bob"])).json()] == ["local"]


def test_it_gets_one_target(client, cast, workspace, gpu):
    Run.objects.filter(pk=make_run(workspace, cast["carol"]).pk).update(compute_target=gpu)
    response = client.get(f"{API}/gpu", headers=token_for(cast["bob"]))
    assert response.status_code == 200
    assert response.json()["id"] == gpu.pk and response.json()["runs"] == 1 and response.json()["builtin"] is False


def test_a_target_that_does_not_exist_is_a_404_naming_it(client, cast, workspace):
    response = client.get(f"{API}/nope", headers=token_for(cast["bob"]))
    assert response.status_code == 404 and response.json() == {"error": "No compute target 'nope'."}


def test_a_target_of_another_workspace_is_a_404(client, cast, workspace):
    ComputeTarget.objects.create(workspace=Workspace.objects.get(name="elsewhere"), name="theirs")
    assert client.get(f"{API}/theirs", headers=token_for(cast["alice"])).status_code == 404


# Adding -------------------------------------------------------------------------------------------------------------


def test_it_adds_a_docker_target_with_a_default_queue(client, cast, workspace):
    response = create(client, cast["carol"], name="box", kind="docker", docker_url="unix:///var/run/docker.sock",
                      cpu_limit=1.5, memory_limit_mb=2048, gpus="2", shm_size_mb=256)
    assert response.status_code == 201
    target = ComputeTarget.objects.get(workspace=workspace, name="box")
    assert response.json() == {
        "id": target.pk, "name": "box", "kind": "docker", "queue": "docker-box", "python_path": "",
        "docker_url": "unix:///var/run/docker.sock", "tls": False, "cpu_limit": 1.5, "memory_limit_mb": 2048,
        "gpus": "2", "shm_size_mb": 256, "callback_url": "", "runs": 0, "builtin": False,
    }
    assert target.queue == "docker-box" and target.cpu_limit == 1.5


def test_it_adds_a_local_target_with_its_own_interpreter_and_queue(client, cast, workspace):
    response = create(client, cast["alice"], name="py312", python_path="/usr/bin/python3.12", queue="fast")
    assert response.status_code == 201
    assert response.json()["kind"] == "local" and response.json()["queue"] == "fast"
    assert response.json()["python_path"] == "/usr/bin/python3.12"
    assert client.get(f"{API}/py312", headers=token_for(cast["bob"])).json()["queue"] == "fast"


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"name": "box", "kind": "docker"}, "docker_url", "A Docker target needs its engine's URL"),
    ({"name": "box", "kind": "docker", "docker_url": "http://engine:2375"}, "docker_url", "Start with unix://, tcp://"),
    ({"name": "box", "kind": "docker", "docker_url": "tcp://engine:99999"}, "docker_url", "The port is not a number"),
    ({"name": "box", "kind": "docker", "docker_url": "unix:///s.sock", "memory_limit_mb": 3}, "memory_limit_mb",
     "at least 6 MB"),
    ({"name": "box", "kind": "docker", "docker_url": "unix:///s.sock", "cpu_limit": 0}, "cpu_limit", "above 0"),
    ({"name": "box", "kind": "docker", "docker_url": "unix:///s.sock", "memory_limit_mb": 10**12}, "memory_limit_mb",
     "At most 1,073,741,824 MB"),
    ({"name": "box", "kind": "docker", "docker_url": "unix:///s.sock", "shm_size_mb": 10**12}, "shm_size_mb",
     "Give 1 to 1,073,741,824 MB"),
    ({"name": "box", "kind": "docker", "docker_url": "unix:///s.sock", "cpu_limit": 1e9}, "cpu_limit", "at most 4,096"),
    ({"name": "box", "kind": "docker", "docker_url": "unix:///s.sock", "gpus": "some"}, "gpus", "Use all, a number"),
    ({"name": "box", "kind": "docker", "docker_url": "unix:///s.sock", "python_path": "/usr/bin/python3"},
     "python_path", "Docker targets run in the environment's image"),
    ({"name": "box", "docker_url": "unix:///s.sock"}, "docker_url", "Only Docker targets use this"),
    ({"name": "box", "kind": "cloud"}, "kind", "Select a valid choice."),
    ({"name": "bad name!"}, "name", ""),
    ({"name": ""}, "name", "This field is required."),
])
def test_an_invalid_target_is_a_400_with_the_errors_by_field(client, cast, workspace, fields, field, message):
    response = create(client, cast["carol"], **fields)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert field in errors and message in " ".join(errors[field])
    assert response.json()["error"].startswith("Invalid input:") and f"{field}:" in response.json()["error"]
    assert list(workspace.compute_targets.values_list("name", flat=True)) == ["local"]


def test_a_key_is_never_echoed_back_in_an_error(client, cast, workspace):
    response = create(client, cast["carol"], name="box", kind="docker", docker_url="tcp://engine:2376",
                      tls_client_key=KEY)
    assert response.status_code == 400 and "not really a key" not in response.content.decode()
    assert "tls_client_key" in response.json()["errors"]


@pytest.mark.parametrize(("fields", "field"), [({"kind": "docker"}, "name"), ({"name": "box", "cpu_limit": "lots"},
                                                                               "cpu_limit")])
def test_a_body_of_the_wrong_shape_is_a_400_naming_the_field(client, cast, workspace, fields, field):
    response = create(client, cast["carol"], **fields)
    assert response.status_code == 400 and field in response.json()["errors"]


@pytest.mark.parametrize("name", ["local", "LOCAL", "gpu"])
def test_a_name_already_taken_is_a_400(client, cast, workspace, gpu, name):
    response = create(client, cast["carol"], name=name, kind="docker", docker_url="unix:///s.sock")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "name": [f"There is already a target named {name} in this workspace: choose another name."]}
    assert workspace.compute_targets.count() == 2


def test_a_reader_cannot_add_a_target(client, cast, workspace):
    response = create(client, cast["bob"], name="box")
    assert response.status_code == 403
    assert response.json() == {"error": "Readers cannot change anything in this workspace."}
    assert not ComputeTarget.objects.filter(name="box").exists()


# Testing the engine -------------------------------------------------------------------------------------------------


def test_testing_a_docker_target_that_cannot_be_reached_tells_an_owner_why(client, cast, workspace, gpu):
    response = client.post(f"{API}/gpu/test", headers=token_for(cast["alice"]))
    assert response.status_code == 200
    assert response.json()["ok"] is False
    assert "/nonexistent.sock" in response.json()["message"]


def test_testing_a_docker_target_tells_a_contributor_only_that_it_failed(client, cast, workspace, gpu):
    response = client.post(f"{API}/gpu/test", headers=token_for(cast["carol"]))
    assert response.json() == {"ok": False, "message": "Could not connect to the target's Docker engine. An owner of "
                                                       "this workspace can test it to see why."}


def test_a_target_outside_the_allow_list_is_refused(client, cast, workspace, settings):
    settings.STUDIO_DOCKER_ALLOWED_ENGINES = ["gpu-*.lab", "10.1.0.0/16"]
    before = ComputeTarget.objects.count()
    for url in ("tcp://127.0.0.1:2375", "unix:///var/run/docker.sock", "ssh://root@10.2.0.1"):
        response = client.post(f"{API}", {"name": "probe", "kind": "docker", "docker_url": url},
                               content_type="application/json", headers=token_for(cast["carol"]))
        assert response.status_code == 400, url
        assert "is not one this studio allows" in response.json()["errors"]["docker_url"][0]
    assert ComputeTarget.objects.count() == before
    for url in ("tcp://gpu-1.lab:2376", "ssh://root@10.1.3.4"):
        response = client.post(f"{API}", {"name": f"ok-{url[-4:]}", "kind": "docker", "docker_url": url},
                               content_type="application/json", headers=token_for(cast["carol"]))
        assert response.status_code == 201, response.json()


def test_testing_the_local_target_says_it_has_no_engine(client, cast, workspace):
    response = client.post(f"{API}/local/test", headers=token_for(cast["carol"]))
    assert response.status_code == 200
    assert response.json() == {"ok": False,
                               "message": "local is a local target: only Docker targets have an engine to connect to."}


def test_testing_a_target_that_does_not_exist_is_a_404(client, cast, workspace):
    response = client.post(f"{API}/nope/test", headers=token_for(cast["carol"]))
    assert response.status_code == 404 and response.json() == {"error": "No compute target 'nope'."}


# Removing -----------------------------------------------------------------------------------------------------------


def delete(client, user, name):
    return client.delete(f"{API}/{name}", headers=token_for(user))


def test_an_unused_target_is_removed(client, cast, workspace, gpu):
    response = delete(client, cast["carol"], "gpu")
    assert response.status_code == 204 and response.content == b""
    assert not ComputeTarget.objects.filter(pk=gpu.pk).exists()
    assert client.get(f"{API}/gpu", headers=token_for(cast["bob"])).status_code == 404


def test_the_builtin_local_target_is_never_removed(client, cast, workspace):
    response = delete(client, cast["alice"], "local")
    assert response.status_code == 409
    assert response.json() == {"error": "The built-in local target cannot be removed: new runs use it by default."}
    assert workspace.compute_targets.filter(name="local").exists()


def test_a_target_a_run_used_is_kept(client, cast, workspace, gpu):
    Run.objects.filter(pk=make_run(workspace, cast["carol"]).pk).update(compute_target=gpu)
    response = delete(client, cast["carol"], "gpu")
    assert response.status_code == 409
    assert response.json() == {"error": "gpu cannot be removed: 1 run(s) use it."}
    assert ComputeTarget.objects.filter(pk=gpu.pk).exists()


def test_removing_a_target_that_does_not_exist_is_a_404(client, cast, workspace):
    response = delete(client, cast["carol"], "nope")
    assert response.status_code == 404 and response.json() == {"error": "No compute target 'nope'."}


def test_a_reader_cannot_remove_a_target(client, cast, workspace, gpu):
    response = delete(client, cast["bob"], "gpu")
    assert response.status_code == 403
    assert ComputeTarget.objects.filter(pk=gpu.pk).exists()
