"""Creating an environment: version 1 of a new name; saving builds no image (a Docker run, or Build, does)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from environments import builds
from environments.models import BuildStatus, Environment, EnvironmentImage
from tests.conftest import assert_sent_to_sign_in, login, text
from tests.environments.conftest import form_data, image_for, make_env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
URL = "/w/lab/environments/new/"
RESERVED = "Names starting with Studio- are reserved for curated environments: save it under another name."


@pytest.fixture
def enqueued(monkeypatch) -> list[int]:
    """Image ids handed to the `builds` queue."""
    calls: list[int] = []
    monkeypatch.setattr(builds, "_enqueue", calls.append)
    return calls


def test_it_is_at_the_expected_url(workspace):
    assert reverse("environment_create", args=["lab"]) == URL


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_a_writer_creates_version_1_and_nothing_is_built(
    client, cast, workspace, who, enqueued, django_capture_on_commit_callbacks
):
    login(client, cast[who])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(URL, form_data(env_vars="EPOCHS=3\n# a comment\nLR=0.1"))
    env = Environment.objects.get(workspace=workspace, name="torch-env")
    assert response.status_code == 302 and response.url == "/w/lab/environments/torch-env/1/"
    assert (env.version, env.kind, env.created_by) == (1, "system", cast[who])
    assert env.env_vars == {"EPOCHS": "3", "LR": "0.1"}
    assert env.definition_hash == env.definition().hash()
    assert not EnvironmentImage.objects.exists() and enqueued == []
    page = text(client.get(response.url))
    assert "Saved torch-env version 1." in page and "No image yet: it is built when a run" in page
    assert "Build the image" in page


def test_saving_on_a_studio_without_docker_targets_starts_no_build(
    client, cast, workspace, monkeypatch, django_capture_on_commit_callbacks
):
    """Nothing reaches the `builds` queue: the Celery app sends no task at all, and no image is recorded."""
    from celery import current_app

    from studio.models import ComputeTarget

    assert not ComputeTarget.objects.filter(kind=ComputeTarget.Kind.DOCKER).exists()
    sent: list[tuple] = []
    monkeypatch.setattr(current_app, "send_task", lambda *args, **kwargs: sent.append((args, kwargs)))
    login(client, cast["alice"])
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(URL, form_data()).status_code == 302
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/w/lab/environments/torch-env/1/edit/", form_data(python_packages="six==1.17.0")).status_code == 302
    assert Environment.objects.filter(name="torch-env").count() == 2
    assert not EnvironmentImage.objects.exists() and sent == []


def test_a_reader_sees_the_form_but_cannot_save(client, cast, workspace):
    login(client, cast["bob"])
    response = client.get(URL)
    assert response.status_code == 200
    assert "Readers cannot save environments" in text(response)
    assert '<button class="primary" type="submit" disabled>' in response.content.decode()


def test_it_refuses_a_reader_and_creates_nothing(client, cast, workspace):
    login(client, cast["bob"])
    assert client.post(URL, form_data()).status_code == 403
    assert not Environment.objects.filter(workspace=workspace).exists()
    assert not EnvironmentImage.objects.exists()


def test_it_hides_the_workspace_from_an_outsider_and_creates_nothing(client, cast, workspace):
    login(client, cast["charlie"])
    assert client.get(URL).status_code == 404
    assert client.post(URL, form_data()).status_code == 404
    assert not Environment.objects.filter(name="torch-env").exists()


def test_it_sends_an_anonymous_visitor_to_sign_in_and_creates_nothing(client, workspace):
    assert_sent_to_sign_in(client.get(URL), URL)
    assert_sent_to_sign_in(client.post(URL, form_data()), URL)
    assert not Environment.objects.filter(name="torch-env").exists()


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_it_refuses_other_methods(client, cast, method):
    login(client, cast["alice"])
    assert getattr(client, method)(URL).status_code == 405


def test_it_refuses_a_cross_site_post_without_the_csrf_token(cast, workspace):
    strict = Client(enforce_csrf_checks=True)
    login(strict, cast["alice"])
    assert strict.post(URL, form_data()).status_code == 403
    assert not Environment.objects.filter(name="torch-env").exists()


@pytest.mark.parametrize("name", ["Studio-sklearn", "Studio-mine", "studio-lowercase"])
def test_names_starting_with_studio_are_reserved(client, cast, workspace, name):
    login(client, cast["alice"])
    response = client.post(URL, form_data(name=name))
    assert response.status_code == 400
    assert RESERVED in text(response)
    assert not Environment.objects.filter(workspace=workspace).exists()


@pytest.mark.parametrize("name", ["new", "images"])
def test_names_the_pages_use_are_refused(client, cast, workspace, name):
    login(client, cast["alice"])
    response = client.post(URL, form_data(name=name))
    assert response.status_code == 400
    assert "is used by the environment pages themselves" in text(response)


def test_an_existing_name_is_refused_with_a_way_forward(client, cast, workspace):
    make_env(workspace, cast["alice"], "torch-env")
    login(client, cast["carol"])
    response = client.post(URL, form_data())
    assert response.status_code == 400
    assert "An environment named torch-env already exists: open it and choose Edit to save a new version of it." in text(response)
    assert Environment.objects.filter(workspace=workspace, name="torch-env").count() == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "bad name"}, "Use 1-255 letters, digits"),
        ({"kind": "curated"}, "Select a valid choice."),
        ({"kind": "user"}, "A user-managed environment installs nothing, yet it has Python packages"),
        ({"interpreter_path": "/opt/py/bin/python"}, "The interpreter path is for user-managed environments"),
        ({"base_dockerfile": "FROM python:3.12-slim"}, "Give a base image or a base Dockerfile, not both."),
        ({"base_image": "", "base_dockerfile": "RUN echo hi"}, "A base Dockerfile starts from an image: add a FROM line."),
        ({"base_image": "python 3"}, "Give an image reference"),
        ({"conda_spec": "channels: [conda-forge\n"}, "The conda specification is not valid YAML"),
        ({"conda_spec": "- numpy"}, "The conda specification must be a mapping"),
        ({"env_vars": "NOEQUALS"}, "Line 1: write KEY=VALUE."),
        ({"env_vars": "STUDIO_X=1"}, "names starting with STUDIO_ are reserved"),
        ({"registry_password": "pw"}, "A registry password needs the username that goes with it."),
    ],
)
def test_it_explains_what_to_fix(client, cast, workspace, fields, message):
    login(client, cast["alice"])
    response = client.post(URL, form_data(**fields))
    assert response.status_code == 400
    assert message in text(response)
    assert not Environment.objects.filter(workspace=workspace).exists()


def test_curated_cannot_be_chosen_as_a_kind(client, cast, workspace):
    login(client, cast["alice"])
    page = client.get(URL).content.decode()
    assert 'value="system"' in page and 'value="user"' in page and 'value="curated"' not in page


def test_a_user_managed_environment_gets_no_image(client, cast, workspace, enqueued, django_capture_on_commit_callbacks):
    login(client, cast["alice"])
    data = form_data(name="local-py", kind="user", python_packages="", base_image="", interpreter_path="/usr/bin/python3")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(URL, data)
    assert response.status_code == 302
    env = Environment.objects.get(name="local-py")
    assert (env.kind, env.interpreter_path, env.base_image) == ("user", "/usr/bin/python3", "")
    assert not EnvironmentImage.objects.exists() and enqueued == []


def test_an_empty_base_image_is_written_down_as_the_default(client, cast, workspace, settings):
    settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE = "studio/base-python:bookworm"
    login(client, cast["alice"])
    client.post(URL, form_data(base_image=""))
    assert Environment.objects.get(name="torch-env").base_image == "studio/base-python:bookworm"


def test_an_identical_definition_shares_the_built_image_without_a_second_build(
    client, cast, workspace, enqueued, django_capture_on_commit_callbacks
):
    first = make_env(workspace, cast["alice"], "first-env", python_packages="six==1.16.0", env_vars={"A": "1"})
    image = image_for(first, status=BuildStatus.SUCCEEDED, build_count=1)
    login(client, cast["carol"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(URL, form_data(name="second-env", description="Other words", env_vars="B=2"), follow=True)
    second = Environment.objects.get(name="second-env")
    assert second.definition_hash == first.definition_hash
    assert list(EnvironmentImage.objects.values_list("pk", flat=True)) == [image.pk]
    assert enqueued == []
    assert "Image already built: shared with 2 environment versions." in text(response)
