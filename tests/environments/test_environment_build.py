"""Building the image of an environment version that has none yet (a curated one, say)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from environments import builds
from environments.models import BuildStatus, EnvironmentImage
from tests.conftest import assert_sent_to_sign_in, login, text
from tests.environments.conftest import image_for, make_env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
URL = "/w/lab/environments/Studio-sklearn/1/build/"


@pytest.fixture
def enqueued(monkeypatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(builds, "_enqueue", calls.append)
    return calls


def test_it_is_at_the_expected_url(workspace):
    assert reverse("environment_build", args=["lab", "Studio-sklearn", 1]) == URL


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_a_writer_queues_the_build_and_follows_it_on_the_image_page(
    client, cast, curated, who, enqueued, django_capture_on_commit_callbacks
):
    login(client, cast[who])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(URL, follow=True)
    image = EnvironmentImage.objects.get(definition_hash=curated.definition_hash)
    assert response.redirect_chain == [(f"/w/lab/environments/images/{image.pk}/", 302)]
    assert image.status == BuildStatus.QUEUED and enqueued == [image.pk]
    assert "Image build queued" in text(response)


def test_an_existing_image_is_left_as_it_is(client, cast, curated, enqueued, django_capture_on_commit_callbacks):
    image = image_for(curated, status=BuildStatus.SUCCEEDED, build_count=1)
    login(client, cast["carol"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(URL, follow=True)
    image.refresh_from_db()
    assert (image.status, image.build_count, enqueued) == (BuildStatus.SUCCEEDED, 1, [])
    assert "Image already built: shared with 1 environment version." in text(response)


def test_a_user_managed_environment_has_nothing_to_build(client, cast, workspace, enqueued):
    make_env(workspace, cast["alice"], "local-py", kind="user", base_image="")
    login(client, cast["alice"])
    response = client.post("/w/lab/environments/local-py/1/build/", follow=True)
    assert response.redirect_chain == [("/w/lab/environments/local-py/1/", 302)]
    assert "A user-managed environment has no image" in text(response)
    assert not EnvironmentImage.objects.exists()


def test_it_refuses_a_reader_and_builds_nothing(client, cast, curated):
    login(client, cast["bob"])
    assert client.post(URL).status_code == 403
    assert not EnvironmentImage.objects.exists()


def test_it_hides_the_workspace_from_an_outsider_and_builds_nothing(client, cast, curated):
    login(client, cast["charlie"])
    assert client.post(URL).status_code == 404
    assert not EnvironmentImage.objects.exists()


def test_an_unknown_version_is_not_found(client, cast, curated):
    login(client, cast["alice"])
    assert client.post("/w/lab/environments/Studio-sklearn/5/build/").status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in_and_builds_nothing(client, workspace, curated):
    assert_sent_to_sign_in(client.post(URL), URL)
    assert not EnvironmentImage.objects.exists()


def test_it_refuses_a_get_and_builds_nothing(client, cast, curated):
    login(client, cast["alice"])
    assert client.get(URL).status_code == 405
    assert not EnvironmentImage.objects.exists()


def test_it_refuses_a_cross_site_post_without_the_csrf_token(cast, curated):
    strict = Client(enforce_csrf_checks=True)
    login(strict, cast["alice"])
    assert strict.post(URL).status_code == 403
    assert not EnvironmentImage.objects.exists()
