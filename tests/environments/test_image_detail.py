"""An image's page: what it is, how its build went, its live log, and every visible environment version using it."""

from __future__ import annotations

import datetime

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from environments import builds
from environments.models import BuildStatus
from studio.models import Workspace
from tests.conftest import assert_sent_to_sign_in, login
from tests.environments.conftest import image_for, make_env, plain

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
FROZEN = "pip==25.0\nsix==1.16.0\n"


@pytest.fixture
def env(cast, workspace):
    return make_env(workspace, cast["alice"], "torch-env", python_packages="six==1.16.0")


@pytest.fixture
def image(env):
    start = timezone.now() - datetime.timedelta(seconds=80)
    image = image_for(
        env, status=BuildStatus.SUCCEEDED, dockerfile="FROM python:3.12-slim\nRUN python3 -m venv /opt/studio/venv\n",
        image_id="sha256:" + "ab" * 32, size_bytes=312_000_000, image_created="2026-11-24T08:40:00Z",
        resolved_packages=FROZEN, build_count=1, started_at=start, ended_at=start + datetime.timedelta(seconds=75),
    )
    log = builds.log_path(image)
    log.parent.mkdir(parents=True)
    log.write_text("Step 1/5 : FROM python:3.12-slim\n<b>not markup</b>\nSuccessfully built abc\n")
    return image


def url(image) -> str:
    return f"/w/lab/environments/images/{image.pk}/"


def test_it_is_at_the_expected_url(image):
    assert reverse("image_detail", args=["lab", image.pk]) == url(image)


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_every_member_sees_the_image_and_how_its_build_went(client, cast, image, env, who):
    login(client, cast[who])
    response = client.get(url(image))
    assert response.status_code == 200
    page = plain(response)
    assert f"studio/env_{env.definition_hash}" in page
    assert 'data-status="Succeeded"' in response.content.decode()
    assert "sha256:" + "ab" * 32 in page and "297.5\xa0MB" in page and "2026-11-24T08:40:00Z" in page
    assert "Build time 1m 15s" in " ".join(page.split())
    assert "RUN python3 -m venv /opt/studio/venv" in page
    assert FROZEN.strip() in page
    assert "Step 1/5 : FROM python:3.12-slim" in page
    assert "&lt;b&gt;not markup&lt;/b&gt;" in response.content.decode()


def test_it_lists_every_version_the_member_may_see_and_no_other(client, cast, workspace, image, env):
    make_env(workspace, cast["carol"], "torch-env", python_packages="six==1.16.0", env_vars={"A": "1"})
    make_env(workspace, cast["carol"], "twin", python_packages="six==1.16.0")
    make_env(None, None, "Studio-six", kind="curated", python_packages="six==1.16.0")
    make_env(Workspace.objects.get(name="elsewhere"), cast["charlie"], "secret-env", python_packages="six==1.16.0")
    make_env(workspace, None, "inline-1", anonymous=True, python_packages="six==1.16.0")
    login(client, cast["bob"])
    response = client.get(url(image))
    versions = response.content.decode().split('id="versions"', 1)[1].split("</section>", 1)[0]
    for path in ("torch-env/1/", "torch-env/2/", "twin/1/", "Studio-six/1/"):
        assert f'href="/w/lab/environments/{path}"' in versions
    assert "secret-env" not in response.content.decode() and "inline-1" not in versions
    assert "1 unnamed environment made for runs' inline packages" in plain(response)


def test_a_failed_build_shows_its_failing_step_and_error(client, cast, env):
    image = image_for(env, status=BuildStatus.FAILED, failed_step="Step 6/7 : RUN pip install -r requirements.txt",
                      error="No matching distribution found for nothing-xyz==1")
    login(client, cast["bob"])
    page = plain(client.get(url(image)))
    assert "Failed step Step 6/7 : RUN pip install -r requirements.txt" in " ".join(page.split())
    assert "No matching distribution found for nothing-xyz==1" in page


def test_a_build_in_progress_streams_its_log_live(client, cast, env):
    image = image_for(env, status=BuildStatus.BUILDING)
    login(client, cast["bob"])
    page = client.get(url(image)).content.decode()
    assert f'data-events-url="{url(image)}events/"' in page and f'data-log-url="{url(image)}log/"' in page
    assert "studio/live_console.js" in page
    assert f'hx-get="{url(image)}"' in page


def test_the_summary_part_stops_polling_once_the_build_ended(client, cast, env):
    image = image_for(env, status=BuildStatus.BUILDING)
    login(client, cast["bob"])
    part = client.get(url(image), headers={"HX-Request": "true", "HX-Target": "image-summary"})
    assert part.status_code == 200 and "<html" not in part.content.decode()
    image.transition(BuildStatus.FAILED, from_states=(BuildStatus.BUILDING,), error="boom")
    part = client.get(url(image), headers={"HX-Request": "true", "HX-Target": "image-summary"})
    assert part.status_code == 286 and "boom" in part.content.decode()


def test_the_rebuild_button_is_for_writers(client, cast, image):
    login(client, cast["carol"])
    assert 'id="rebuild-button"' in client.get(url(image)).content.decode()
    login(client, cast["bob"])
    assert 'id="rebuild-button"' not in client.get(url(image)).content.decode()


def test_an_image_used_by_a_curated_environment_is_visible(client, cast, curated):
    image = image_for(curated)
    login(client, cast["bob"])
    assert client.get(url(image)).status_code == 200


def test_an_image_only_another_workspace_uses_is_not_found(client, cast, workspace):
    foreign = make_env(Workspace.objects.get(name="elsewhere"), cast["charlie"], "secret-env", python_packages="x==1")
    image = image_for(foreign)
    login(client, cast["alice"])
    assert client.get(url(image)).status_code == 404
    assert client.get("/w/lab/environments/images/999999/").status_code == 404


def test_it_hides_the_workspace_from_an_outsider(client, cast, image):
    login(client, cast["charlie"])
    assert client.get(url(image)).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, image):
    assert_sent_to_sign_in(client.get(url(image)), url(image))


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_it_refuses_other_methods(client, cast, image, method):
    login(client, cast["alice"])
    assert getattr(client, method)(url(image)).status_code == 405


def test_it_needs_no_csrf_token_to_read(cast, image):
    strict = Client(enforce_csrf_checks=True)
    login(strict, cast["bob"])
    assert strict.get(url(image)).status_code == 200
