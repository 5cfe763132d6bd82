"""An image's build log: the full text, a download, and JSON chunks from a byte offset (the polling fallback)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from environments import builds
from environments.models import BuildStatus
from tests.conftest import assert_sent_to_sign_in, login
from tests.environments.conftest import image_for, make_env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
LOG = b"Step 1/5 : FROM python:3.12-slim\n<b>bold</b>\npartial"


@pytest.fixture
def image(cast, workspace):
    env = make_env(workspace, cast["alice"], "torch-env")
    return image_for(env, status=BuildStatus.BUILDING)


@pytest.fixture
def log(image):
    path = builds.log_path(image)
    path.parent.mkdir(parents=True)
    path.write_bytes(LOG)
    return path


def url(image) -> str:
    return f"/w/lab/environments/images/{image.pk}/log/"


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_it_is_at_the_expected_url(image):
    assert reverse("image_log", args=["lab", image.pk]) == url(image)


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_gives_every_member_the_full_log_as_plain_text(client, cast, image, log, who):
    login(client, cast[who])
    response = client.get(url(image))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert not response.get("Content-Disposition", "").startswith("attachment")
    assert body(response) == LOG


def test_it_offers_the_log_as_a_download(client, cast, image, log):
    login(client, cast["bob"])
    response = client.get(url(image), {"download": "1"})
    assert response["Content-Disposition"] == f'attachment; filename="image-{image.pk}-build.log"'
    assert body(response) == LOG


def test_it_answers_empty_before_the_build_wrote_anything(client, cast, image):
    login(client, cast["bob"])
    response = client.get(url(image))
    assert response.status_code == 200 and body(response) == b""


def test_it_gives_whole_lines_from_an_offset_for_polling(client, cast, image, log):
    login(client, cast["bob"])
    first = client.get(url(image), {"offset": "0"}).json()
    assert first == {"lines": ["Step 1/5 : FROM python:3.12-slim", "<b>bold</b>"], "next_offset": 45,
                     "status": "Building", "final": False}
    assert client.get(url(image), {"offset": "45"}).json()["lines"] == []


@pytest.mark.parametrize("offset", ["-1", "x", "1.5"])
def test_it_refuses_a_bad_offset(client, cast, image, log, offset):
    login(client, cast["bob"])
    assert client.get(url(image), {"offset": offset}).status_code == 400


def test_it_hides_the_workspace_from_an_outsider(client, cast, image, log):
    login(client, cast["charlie"])
    assert client.get(url(image)).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, image):
    assert_sent_to_sign_in(client.get(url(image)), url(image))


@pytest.mark.parametrize("method", ["post", "delete"])
def test_it_refuses_other_methods(client, cast, image, method):
    login(client, cast["alice"])
    assert getattr(client, method)(url(image)).status_code == 405
