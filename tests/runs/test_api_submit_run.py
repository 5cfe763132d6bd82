"""POST /api/v1/workspaces/<ws>/runs: what the submit form does, for scripts and CLIs."""

from __future__ import annotations

import pytest

from environments.models import Environment, EnvironmentKind
from runs.models import Run, RunStatus
from studio.models import ApiToken
from tests.conftest import py_upload, zip_upload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
URL = "/api/v1/workspaces/lab/runs"


def token_for(user) -> dict:
    return {"Authorization": f"Token {ApiToken.issue(user, 'tests')[1]}"}


def post(client, user, **fields):
    data = {"experiment": "api", "source": py_upload("print(1)\n"), "compute_target": "local", **fields}
    return client.post(URL, data, headers=token_for(user) if user else {})


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_owners_and_contributors_submit_a_run(client, cast, workspace, who):
    response = post(client, cast[who], arguments="--epochs 3", tags="team=vision")
    assert response.status_code == 201
    body = response.json()
    run = Run.objects.get()
    assert body["id"] == run.pk and body["status"] == RunStatus.QUEUED and body["experiment"] == "api"
    assert body["arguments"] == ["--epochs", "3"] and body["tags"] == {"team": "vision"}
    assert body["url"] == f"/w/lab/runs/{run.pk}/" and run.created_by == cast[who]


def test_the_api_takes_an_environment_by_name_and_version(client, cast, workspace):
    first = Environment(workspace=workspace, name="torchy", kind=EnvironmentKind.SYSTEM_MANAGED,
                        python_packages="six==1.16.0").save_new_version()
    Environment(workspace=workspace, name="torchy", kind=EnvironmentKind.SYSTEM_MANAGED,
                python_packages="six==1.17.0").save_new_version()
    body = post(client, cast["carol"], environment="torchy:1").json()
    assert body["environment"] == {"name": "torchy", "version": 1, "anonymous": False,
                                   "definition_hash": first.definition_hash}
    assert post(client, cast["carol"], environment="torchy").json()["environment"]["version"] == 2
    inline = post(client, cast["carol"], packages="six==1.16.0").json()["environment"]
    assert inline["anonymous"] and inline["definition_hash"] == first.definition_hash


def test_validation_errors_come_back_by_field(client, cast, workspace):
    response = post(client, cast["carol"], experiment="bad name!", source=zip_upload({"a.py": "x"}),
                    entry_script="missing.py", environment="nope")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) >= {"experiment", "environment"}
    assert not Run.objects.exists()


def test_a_reader_is_refused_and_nothing_is_made(client, cast, workspace):
    response = post(client, cast["bob"])
    assert response.status_code == 403 and "Readers cannot change" in response.json()["error"]
    assert not Run.objects.exists()


def test_an_outsider_does_not_see_the_workspace(client, cast, workspace):
    assert post(client, cast["charlie"]).status_code == 404
    assert not Run.objects.exists()


def test_no_token_or_a_wrong_token_is_401(client, cast, workspace):
    assert post(client, None).status_code == 401
    response = client.post(URL, {"experiment": "api"}, headers={"Authorization": "Token stu_0000_nope"})
    assert response.status_code == 401 and not Run.objects.exists()


def test_a_session_without_a_token_is_not_enough(client, cast, workspace):
    client.force_login(cast["alice"])
    assert client.post(URL, {"experiment": "api", "source": py_upload("print(1)\n")}).status_code == 401


def test_deleting_the_collection_is_the_wrong_method(client, cast, workspace):
    response = client.delete(URL, headers=token_for(cast["alice"]))
    assert response.status_code == 405 and set(response["Allow"].split(", ")) == {"GET", "POST"}
    assert response.json()["error"].startswith("This route takes")


def test_a_revoked_token_stops_working(client, cast, workspace):
    token, secret = ApiToken.issue(cast["carol"], "laptop")
    token.delete()
    assert client.post(URL, {}, headers={"Authorization": f"Token {secret}"}).status_code == 401
