"""An image page's server-sent events: the build's log lines and status changes from its Redis stream."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from django.urls import reverse

from environments import builds
from environments.events import _just_before
from environments.models import BuildStatus
from studio import live
from studio.models import Workspace
from tests.conftest import assert_sent_to_sign_in, login
from tests.environments.conftest import image_for, make_env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


@pytest.fixture
def image(cast, workspace):
    env = make_env(workspace, cast["alice"], "torch-env")
    return image_for(env, status=BuildStatus.BUILDING)


def url(image) -> str:
    return f"/w/lab/environments/images/{image.pk}/events/"


def parse(chunk: str) -> dict:
    fields = {}
    for line in chunk.strip("\n").split("\n"):
        key, _, value = line.partition(": ")
        fields[key] = value
    if "data" in fields:
        fields["data"] = json.loads(fields["data"])
    return fields


def stream(user, image, *, headers=None, then=None, then_after=1, count=None) -> tuple[object, list[str]]:
    """Open the stream as `user`; read `count` chunks (all when None); call `then()` after `then_after` chunks."""
    client = AsyncClient()
    client.force_login(user)

    async def read():
        response = await client.get(url(image), headers=headers or {})
        chunks = []
        iterator = aiter(response.streaming_content)
        try:
            while count is None or len(chunks) < count:
                chunk = await asyncio.wait_for(anext(iterator), timeout=5)
                chunks.append(chunk.decode() if isinstance(chunk, bytes) else chunk)
                if len(chunks) == then_after and then is not None:
                    then()
        except StopAsyncIteration:
            pass
        finally:
            await iterator.aclose()
        return response, chunks

    return async_to_sync(read)()


def events(chunks) -> list[tuple[str, dict]]:
    return [(e["event"], e["data"]) for e in (parse(chunk) for chunk in chunks[1:]) if "event" in e]


def test_it_is_at_the_expected_url(image):
    assert reverse("image_events", args=["lab", image.pk]) == url(image)


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_opens_an_event_stream_for_every_member(client, cast, image, who):
    login(client, cast[who])
    response = client.get(url(image))  # not read: the stream of a build in progress waits for news
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache" and response["X-Accel-Buffering"] == "no"


def test_it_sends_the_build_log_and_ends_when_the_build_ends(cast, image):
    key = builds.stream_key(image.pk)
    live.append_status(key, BuildStatus.QUEUED)
    live.append_status(key, BuildStatus.BUILDING)
    live.append_lines(key, [("out", "Step 1/5 : FROM python:3.12-slim"), ("out", "<b>text</b>")])

    def finish():
        live.append_lines(key, [("err", "ERROR: No matching distribution")])
        live.append_status(key, BuildStatus.FAILED)

    _, chunks = stream(cast["bob"], image, then=finish, then_after=4)
    assert chunks[0] == "retry: 1000\n\n"
    assert events(chunks) == [
        ("status", {"status": "Queued"}),
        ("status", {"status": "Building"}),
        ("log", {"lines": [["out", "Step 1/5 : FROM python:3.12-slim"], ["out", "<b>text</b>"]]}),
        ("log", {"lines": [["err", "ERROR: No matching distribution"]]}),
        ("status", {"status": "Failed"}),
        ("end", {}),
    ]


def test_a_rebuild_is_not_ended_by_the_previous_builds_final_status(cast, image):
    key = builds.stream_key(image.pk)
    for status in (BuildStatus.QUEUED, BuildStatus.BUILDING):
        live.append_status(key, status)
    live.append_lines(key, [("out", "old build")])
    live.append_status(key, BuildStatus.SUCCEEDED)
    live.append_status(key, BuildStatus.QUEUED)  # the rebuild
    live.append_status(key, BuildStatus.BUILDING)
    live.append_lines(key, [("out", "new build")])
    _, chunks = stream(cast["carol"], image, then=lambda: live.append_status(key, BuildStatus.SUCCEEDED), then_after=4)
    assert events(chunks) == [
        ("status", {"status": "Queued"}),
        ("status", {"status": "Building"}),
        ("log", {"lines": [["out", "new build"]]}),
        ("status", {"status": "Succeeded"}),
        ("end", {}),
    ]


def test_a_reconnecting_page_resumes_after_its_last_event_id(cast, image, redis_client):
    key = builds.stream_key(image.pk)
    live.append_lines(key, [("out", "first")])
    live.append_lines(key, [("out", "second")])
    live.append_status(key, BuildStatus.SUCCEEDED)
    first_id = redis_client.xrange(key)[0][0].decode()
    _, chunks = stream(cast["bob"], image, headers={"Last-Event-ID": first_id})
    assert events(chunks) == [("log", {"lines": [["out", "second"]]}), ("status", {"status": "Succeeded"}), ("end", {})]


def test_the_stream_of_an_ended_build_with_no_news_ends(cast, image):
    image.transition(BuildStatus.SUCCEEDED, from_states=(BuildStatus.BUILDING,))
    live.append_status(builds.stream_key(image.pk), BuildStatus.SUCCEEDED)
    _, chunks = stream(cast["bob"], image)
    assert events(chunks)[-1] == ("end", {})


@pytest.mark.parametrize(("entry", "before"), [("5-3", "5-2"), ("5-0", "4-18446744073709551615"), ("0-0", "0-0")])
def test_the_read_starts_just_before_the_current_builds_first_entry(entry, before):
    assert _just_before(entry) == before


@pytest.mark.parametrize("last_id", ["abc", "1", "1-2-3", "0" * 21 + "-0"])
def test_it_answers_400_for_an_invalid_last_event_id(client, cast, image, last_id):
    login(client, cast["bob"])
    assert client.get(url(image), headers={"Last-Event-ID": last_id}).status_code == 400


def test_it_hides_the_workspace_from_an_outsider(client, cast, image):
    login(client, cast["charlie"])
    assert client.get(url(image)).status_code == 404


def test_an_image_of_another_workspace_is_not_found(client, cast, workspace):
    foreign = make_env(Workspace.objects.get(name="elsewhere"), cast["charlie"], "secret-env", python_packages="x==1")
    image = image_for(foreign)
    login(client, cast["alice"])
    assert client.get(url(image)).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, image):
    assert_sent_to_sign_in(client.get(url(image)), url(image))


def test_it_refuses_a_post(client, cast, image):
    login(client, cast["alice"])
    assert client.post(url(image)).status_code == 405
