"""Rebuilding an image on purpose: writers only, POST only, only once its build has ended."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from environments import builds
from environments.models import BuildStatus, EnvironmentImage
from studio.models import Workspace
from tests.conftest import assert_sent_to_sign_in, login, text
from tests.environments.conftest import image_for, make_env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


@pytest.fixture
def image(cast, workspace):
    env = make_env(workspace, cast["alice"], "torch-env", python_packages="requests")
    return image_for(env, status=BuildStatus.FAILED, failed_step="Step 6/7 : RUN pip install", error="boom", build_count=1)


@pytest.fixture
def enqueued(monkeypatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(builds, "_enqueue", calls.append)
    return calls


def url(image) -> str:
    return f"/w/lab/environments/images/{image.pk}/rebuild/"


def state(image) -> tuple:
    image = EnvironmentImage.objects.get(pk=image.pk)
    return image.status, image.failed_step, image.error, image.build_count


def test_it_is_at_the_expected_url(image):
    assert reverse("image_rebuild", args=["lab", image.pk]) == url(image)


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_a_writer_queues_a_rebuild(client, cast, image, who, enqueued, django_capture_on_commit_callbacks, redis_client):
    login(client, cast[who])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url(image), follow=True)
    assert response.redirect_chain == [(f"/w/lab/environments/images/{image.pk}/", 302)]
    assert state(image) == (BuildStatus.QUEUED, "", "", 1)
    assert enqueued == [image.pk]
    assert "Rebuild queued" in text(response)
    assert redis_client.xrange(builds.stream_key(image.pk))[-1][1] == {b"k": b"status", b"v": b"Queued"}


def test_a_build_in_progress_is_not_queued_twice(client, cast, image, enqueued, django_capture_on_commit_callbacks):
    image.transition(BuildStatus.BUILDING, from_states=(BuildStatus.FAILED,))
    login(client, cast["carol"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url(image), follow=True)
    assert state(image)[0] == BuildStatus.BUILDING and enqueued == []
    assert "The image is building already: wait for the build to end." in text(response)


def test_it_refuses_a_reader_and_changes_nothing(client, cast, image):
    before = state(image)
    login(client, cast["bob"])
    assert client.post(url(image)).status_code == 403
    assert state(image) == before


def test_it_hides_the_workspace_from_an_outsider_and_changes_nothing(client, cast, image):
    before = state(image)
    login(client, cast["charlie"])
    assert client.post(url(image)).status_code == 404
    assert state(image) == before


def test_an_image_of_another_workspace_is_not_found_and_stays(client, cast, workspace):
    foreign = make_env(Workspace.objects.get(name="elsewhere"), cast["charlie"], "secret-env", python_packages="x==1")
    image = image_for(foreign, status=BuildStatus.FAILED)
    login(client, cast["alice"])
    assert client.post(url(image)).status_code == 404
    assert state(image)[0] == BuildStatus.FAILED


def test_it_sends_an_anonymous_visitor_to_sign_in_and_changes_nothing(client, image):
    before = state(image)
    assert_sent_to_sign_in(client.post(url(image)), url(image))
    assert state(image) == before


def test_it_refuses_a_get_and_changes_nothing(client, cast, image):
    before = state(image)
    login(client, cast["alice"])
    assert client.get(url(image)).status_code == 405
    assert state(image) == before


def test_it_refuses_a_cross_site_post_without_the_csrf_token(cast, image):
    strict = Client(enforce_csrf_checks=True)
    login(strict, cast["alice"])
    before = state(image)
    assert strict.post(url(image)).status_code == 403
    assert state(image) == before
