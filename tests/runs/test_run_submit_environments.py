"""Submitting a run with an environment: by name, by version, as inline packages, with resource overrides."""

from __future__ import annotations

import pytest

from environments.models import Environment, EnvironmentImage, EnvironmentKind
from runs.models import Run
from tests.conftest import login, py_upload, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


def post(client, workspace, **fields):
    data = {"experiment": "envs", "source": py_upload("print(1)\n"), "compute_target": "local", **fields}
    return client.post(f"/w/{workspace.name}/runs/new/", data)


def named(workspace, name: str, packages: str) -> Environment:
    return Environment(workspace=workspace, name=name, kind=EnvironmentKind.SYSTEM_MANAGED,
                       python_packages=packages).save_new_version()


def test_a_run_takes_the_latest_version_of_a_named_environment(client, cast, workspace):
    named(workspace, "torchy", "six==1.16.0")
    latest = named(workspace, "torchy", "six==1.17.0")
    login(client, cast["carol"])
    assert post(client, workspace, environment="torchy").status_code == 302
    assert Run.objects.get().environment == latest


def test_a_run_takes_a_chosen_version(client, cast, workspace):
    first = named(workspace, "torchy", "six==1.16.0")
    named(workspace, "torchy", "six==1.17.0")
    login(client, cast["carol"])
    assert post(client, workspace, environment="torchy:1").status_code == 302
    assert Run.objects.get().environment == first


def test_a_curated_environment_can_be_chosen(client, cast, workspace):
    login(client, cast["carol"])
    assert post(client, workspace, environment="Studio-minimal-python").status_code == 302
    assert Run.objects.get().environment.is_curated


@pytest.mark.parametrize(("value", "message"), [("nope", "There is no environment 'nope' in this workspace."),
                                               ("torchy:x", "Write NAME or NAME:VERSION"),
                                               ("torchy:9", "There is no environment 'torchy:9'")])
def test_an_unknown_environment_is_an_error_next_to_the_field(client, cast, workspace, value, message):
    named(workspace, "torchy", "six==1.16.0")
    login(client, cast["carol"])
    response = post(client, workspace, environment=value)
    assert response.status_code == 400
    assert message in text(response)
    assert f'value="{value}"' in response.content.decode()
    assert not Run.objects.exists()


def test_another_workspaces_environment_is_not_visible(client, cast, workspace):
    from studio.models import Workspace

    other = Workspace.objects.get(name="elsewhere")
    named(other, "private", "six==1.16.0")
    login(client, cast["carol"])
    assert post(client, workspace, environment="private").status_code == 400


def test_inline_packages_make_one_anonymous_environment_found_again_by_its_hash(client, cast, workspace):
    login(client, cast["carol"])
    assert post(client, workspace, packages="six==1.16.0\n# a comment\n").status_code == 302
    assert post(client, workspace, packages="six==1.16.0").status_code == 302
    first, second = Run.objects.order_by("id")
    assert first.environment == second.environment
    assert first.environment.anonymous and first.environment.kind == EnvironmentKind.SYSTEM_MANAGED
    assert not Environment.objects.visible_to(workspace).filter(pk=first.environment.pk).exists()


def test_named_environment_and_packages_together_are_refused(client, cast, workspace):
    named(workspace, "torchy", "six==1.16.0")
    login(client, cast["carol"])
    response = post(client, workspace, environment="torchy", packages="idna")
    assert response.status_code == 400
    assert "Choose a named environment or list packages, not both." in text(response)


def test_resource_overrides_are_kept_with_the_run(client, cast, workspace):
    login(client, cast["carol"])
    assert post(client, workspace, cpu_limit="1.5", memory_limit_mb="512", gpus="all").status_code == 302
    assert Run.objects.get().resources == {"cpu_limit": 1.5, "memory_limit_mb": 512, "gpus": "all"}


@pytest.mark.parametrize(("field", "value", "message"), [("gpus", "some", "Write 'all' or a number of GPUs."),
                                                        ("memory_limit_mb", "2", "greater than or equal to 6"),
                                                        ("cpu_limit", "0", "greater than or equal to 0.01")])
def test_bad_resource_overrides_are_errors(client, cast, workspace, field, value, message):
    login(client, cast["carol"])
    response = post(client, workspace, **{field: value})
    assert response.status_code == 400 and message in text(response)


def test_a_docker_run_queues_its_image_build_at_submission(client, cast, workspace):
    workspace.compute_targets.create(name="dock", kind="docker", docker_url="unix:///var/run/docker.sock", queue="dock")
    env = named(workspace, "torchy", "six==1.16.0")
    login(client, cast["carol"])
    assert post(client, workspace, environment="torchy", compute_target="dock").status_code == 302
    image = EnvironmentImage.objects.get(definition_hash=env.definition_hash)
    assert image.status == "Queued"
    page = text(client.get(f"/w/{workspace.name}/runs/{Run.objects.get().pk}/"))
    assert "torchy:1" in page and f"/w/{workspace.name}/environments/images/{image.pk}/" in page
