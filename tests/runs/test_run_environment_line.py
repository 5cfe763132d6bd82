"""The run page: the Environment line (a local run shows its virtualenv, never the image status) and Cancel."""

from __future__ import annotations

import pytest

from environments.models import BuildStatus
from runs.models import Run
from tests.conftest import login, make_run, text
from tests.environments.conftest import image_for, make_env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


@pytest.fixture
def env(cast, workspace):
    environment = make_env(workspace, cast["alice"], "digits-env", python_packages="six==1.16.0")
    image_for(environment, status=BuildStatus.FAILED, error="registry unreachable")  # a failed Build, say
    return environment


def environment_line(client, run) -> str:
    page = text(client.get(f"/w/lab/runs/{run.pk}/"))
    return page.split("<th>Environment</th>", 1)[1].split("</tr>", 1)[0]


def test_a_local_run_shows_its_virtualenv_not_the_failed_image(client, cast, workspace, env):
    run = make_run(workspace, cast["carol"], environment=env)
    login(client, cast["carol"])
    line = environment_line(client, run)
    assert "virtualenv" in line and env.definition_hash[:12] in line
    assert "image" not in line and "Failed" not in line and "build log" not in line


def test_a_docker_run_shows_its_image_status(client, cast, workspace, env):
    dock = workspace.compute_targets.create(name="dock", kind="docker", docker_url="unix:///var/run/docker.sock",
                                            queue="dock")
    run = make_run(workspace, cast["carol"], environment=env)
    Run.objects.filter(pk=run.pk).update(compute_target=dock)
    login(client, cast["carol"])
    line = environment_line(client, run)
    assert "image" in line and "Failed" in line and "build log" in line and "virtualenv" not in line


def test_cancel_asks_for_confirmation(client, cast, workspace):
    run = make_run(workspace, cast["carol"])
    login(client, cast["carol"])
    form = text(client.get(f"/w/lab/runs/{run.pk}/")).split('id="cancel-form"', 1)[1].split(">", 1)[0]
    assert f"onsubmit=\"return confirm('Cancel run #{run.pk}?" in form
