"""The run page's server-sent events: status changes and console lines from the run's Redis stream."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from django.urls import reverse

from runs import live
from runs.models import Run, RunStatus
from studio import live as studio_live
from studio.sse import REPLAY_ENTRIES
from tests.conftest import assert_sent_to_sign_in, login, make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


@pytest.fixture
def run(cast, workspace, redis_client) -> Run:
    run = make_run(workspace, cast["carol"], experiment="mnist")
    redis_client.delete(live.stream_key(run.pk))  # run ids are reused across tests; their streams must not be
    return run


def url(run) -> str:
    return f"/w/lab/runs/{run.pk}/events/"


def parse(chunk: str) -> dict:
    """One SSE message as {"id", "event", "data"} (data decoded from JSON)."""
    fields = {}
    for line in chunk.strip("\n").split("\n"):
        key, _, value = line.partition(": ")
        fields[key] = value
    if "data" in fields:
        fields["data"] = json.loads(fields["data"])
    return fields


def stream(user, run, *, headers=None, then=None, then_after=1, count=None) -> tuple[object, list[str]]:
    """Open the stream as `user`; read `count` chunks (all when None); call `then()` after `then_after` chunks.

    Every read is bounded by a timeout, so a stream that hangs fails the test instead of blocking it.
    """
    client = AsyncClient()
    client.force_login(user)

    async def read():
        response = await client.get(url(run), headers=headers or {})
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


def test_it_is_at_the_expected_url(run):
    assert reverse("run_events", args=["lab", run.pk]) == url(run)


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_opens_an_event_stream_for_every_member(client, cast, run, who):
    login(client, cast[who])
    response = client.get(url(run))  # not read: the stream of a live run waits for news
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"


def test_it_hides_the_workspace_from_an_outsider(client, cast, run):
    login(client, cast["charlie"])
    assert client.get(url(run)).status_code == 404


def test_it_answers_404_for_a_run_of_another_workspace(client, cast, run):
    from studio.models import Workspace

    foreign = make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret")
    login(client, cast["alice"])
    assert client.get(f"/w/lab/runs/{foreign.pk}/events/").status_code == 404
    assert client.get(f"/w/lab/runs/{run.pk + 1000}/events/").status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, run):
    assert_sent_to_sign_in(client.get(url(run)), url(run))


def test_it_refuses_a_post(client, cast, run):
    login(client, cast["alice"])
    assert client.post(url(run)).status_code == 405


@pytest.mark.parametrize("last_id", ["abc", "1", "1-", "-1", "1-2-3", "1-2; x", "0" * 21 + "-0"])
def test_it_answers_400_for_an_invalid_last_event_id(client, cast, run, last_id):
    login(client, cast["bob"])
    assert client.get(url(run), headers={"Last-Event-ID": last_id}).status_code == 400


def test_it_replays_what_was_published_before_the_page_connected(cast, run):
    live.publish_status(run.pk, RunStatus.RUNNING)
    studio_live.append_lines(live.stream_key(run.pk), [("out", "hello"), ("out", "world"), ("err", "warning: <b>x</b>")])
    response, chunks = stream(cast["bob"], run, count=3)  # the stream then waits for news
    assert response.status_code == 200
    assert chunks[0] == "retry: 1000\n\n"
    status, log = (parse(chunk) for chunk in chunks[1:])
    assert (status["event"], status["data"]) == ("status", {"status": "Running"})
    assert (log["event"], log["data"]) == (
        "log",
        {"lines": [["out", "hello"], ["out", "world"], ["err", "warning: <b>x</b>"]]},
    )
    assert status["id"] != log["id"]


def test_it_sends_what_is_published_while_the_page_is_connected(cast, run):
    live.publish_status(run.pk, RunStatus.PREPARING)

    def publish():  # the replay was read: what comes now reaches the page only by waiting on the stream
        live.publish_status(run.pk, RunStatus.RUNNING)
        studio_live.append_lines(live.stream_key(run.pk), [("out", "hello")])
        live.publish_status(run.pk, RunStatus.COMPLETED)

    _, chunks = stream(cast["alice"], run, then=publish, then_after=2)
    events = [parse(chunk) for chunk in chunks[1:]]
    assert [(e["event"], e["data"]) for e in events] == [
        ("status", {"status": "Preparing"}),
        ("status", {"status": "Running"}),
        ("log", {"lines": [["out", "hello"]]}),
        ("status", {"status": "Completed"}),
        ("end", {}),
    ]


def test_the_stream_of_a_final_run_ends_with_an_end_event(cast, run):
    run.transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED,))
    studio_live.append_lines(live.stream_key(run.pk), [("out", "epoch 1")])
    run.transition(RunStatus.FAILED, from_states=(RunStatus.RUNNING,), reason="Exit code 1.")
    _, chunks = stream(cast["bob"], run)  # reads until the server ends the stream
    events = [parse(chunk) for chunk in chunks[1:]]
    assert [e["event"] for e in events] == ["status", "log", "status", "end"]
    assert events[2]["data"] == {"status": "Failed"}
    assert chunks[-1] == "event: end\ndata: {}\n\n"


def test_a_reconnecting_page_resumes_after_its_last_event_id(cast, run, redis_client):
    studio_live.append_lines(live.stream_key(run.pk), [("out", "first")])
    studio_live.append_lines(live.stream_key(run.pk), [("out", "second")])
    live.publish_status(run.pk, RunStatus.COMPLETED)
    first_id = redis_client.xrange(live.stream_key(run.pk))[0][0].decode()
    _, chunks = stream(cast["carol"], run, headers={"Last-Event-ID": first_id})
    events = [parse(chunk) for chunk in chunks[1:]]
    assert [(e["event"], e["data"]) for e in events] == [
        ("log", {"lines": [["out", "second"]]}),
        ("status", {"status": "Completed"}),
        ("end", {}),
    ]


def test_a_long_stream_says_earlier_lines_are_in_the_full_log(cast, run):
    studio_live.append_lines(live.stream_key(run.pk), [("out" if n % 2 else "err", f"line {n}") for n in range(REPLAY_ENTRIES)])
    live.publish_status(run.pk, RunStatus.COMPLETED)
    _, chunks = stream(cast["bob"], run)
    events = [parse(chunk) for chunk in chunks[1:]]
    assert events[0]["event"] == "truncated"
    lines = [line for e in events if e["event"] == "log" for line in e["data"]["lines"]]
    assert len(lines) < REPLAY_ENTRIES
    assert lines[-1] == ["out", f"line {REPLAY_ENTRIES - 1}"] and ["err", "line 0"] not in lines
    assert [e["event"] for e in events[-2:]] == ["status", "end"]
