"""GET /api/v1/workspaces/<ws>/runs/<id>: a run's status and configuration."""

from __future__ import annotations

import pytest

from studio.models import ApiToken
from tests.conftest import make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


def headers(user) -> dict:
    return {"Authorization": f"Token {ApiToken.issue(user, 'tests')[1]}"}


@pytest.fixture
def run(cast, workspace):
    return make_run(workspace, cast["carol"], experiment="mnist", display_name="first")


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_every_member_reads_a_run(client, cast, run, who):
    response = client.get(f"/api/v1/workspaces/lab/runs/{run.pk}", headers=headers(cast[who]))
    assert response.status_code == 200
    assert response.json()["status"] == "Queued" and response.json()["display_name"] == "first"


def test_an_outsider_gets_404(client, cast, run):
    assert client.get(f"/api/v1/workspaces/lab/runs/{run.pk}", headers=headers(cast["charlie"])).status_code == 404


def test_a_run_of_another_workspace_is_404(client, cast, run):
    response = client.get(f"/api/v1/workspaces/elsewhere/runs/{run.pk}", headers=headers(cast["charlie"]))
    assert response.status_code == 404 and response.json()["error"] == f"No run {run.pk} in this workspace."


def test_anonymous_gets_401(client, run):
    assert client.get(f"/api/v1/workspaces/lab/runs/{run.pk}").status_code == 401


def test_writing_is_the_wrong_method(client, cast, run):
    response = client.post(f"/api/v1/workspaces/lab/runs/{run.pk}", headers=headers(cast["alice"]))
    assert response.status_code == 405 and response["Allow"] == "GET"
