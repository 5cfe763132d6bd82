"""The web server and Redis die while runs go on or wait.

- kill -9 the web server mid-run: the run completes untouched, and a live view that reconnects with the last event
  id it saw (as a browser's EventSource does) gets every remaining line once: no gap, no repeat.
- Redis killed and restarted with runs queued (and the broker's messages resent by the requeue sweep meanwhile):
  each run runs exactly once.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from django.conf import settings

from runs.models import Run, RunStatus
from tests.faults.conftest import LINE, STEADY, assert_nothing_lost, console_lines, expected_lines, wait_final
from tests.services import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def session_cookie(client, user) -> dict:
    client.force_login(user)
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}


def read_events(response, lines: list[str], until_lines: int | None = None) -> tuple[str | None, bool]:
    """Read SSE messages into `lines` until `until_lines` lines arrived (or the stream ends); the last event id
    seen and whether the stream said "end"."""
    last_id, event, data = None, "", ""
    for raw in response.iter_lines():
        if raw.startswith("id: "):
            last_id = raw[4:]
        elif raw.startswith("event: "):
            event = raw[7:]
        elif raw.startswith("data: "):
            data = raw[6:]
        elif raw == "" and event:
            if event == "log":
                lines += [text for _, text in json.loads(data)["lines"] if LINE.match(text)]
            if event == "end":
                return last_id, True
            event, data = "", ""
            if until_lines is not None and len(lines) >= until_lines:
                return last_id, False
    return last_id, False


def test_killing_the_web_server_mid_run_touches_nothing_and_the_live_view_resumes_without_a_gap(
        stack, token, client, cast):
    steps = 700
    run_id = stack.submit(token, STEADY, env_vars=f"STEPS={steps}")
    url = f"{stack.url}/w/lab/runs/{run_id}/events/"
    cookies = session_cookie(client, cast["bob"])  # a reader watches
    seen: list[str] = []
    with httpx.stream("GET", url, cookies=cookies, timeout=30) as response:
        assert response.status_code == 200
        last_id, ended = read_events(response, seen, until_lines=150)
    assert not ended and last_id
    killed = stack.kill("web")
    stack.wait_restarted("web", killed)
    wait_until(stack.web_answers, 30, "the web server to answer again")
    assert Run.objects.get(pk=run_id).status == RunStatus.RUNNING  # the run never noticed
    with httpx.stream("GET", url, cookies=cookies, headers={"Last-Event-ID": last_id}, timeout=60) as response:
        assert response.status_code == 200
        _, ended = read_events(response, seen)
    assert ended
    assert seen == expected_lines(steps)
    assert_nothing_lost(stack, wait_final(run_id, stack=stack), steps)


ONCE = """\
from studio_sdk import Run
run = Run.get_context()
run.log("ran", 1)
print("line 0", flush=True)
print("done", flush=True)
"""


def test_runs_queued_when_redis_restarts_each_run_exactly_once(stack, token):
    stack.supervisorctl("stop", "worker")
    try:
        run_ids = [stack.submit(token, ONCE) for _ in range(3)]
        assert all(Run.objects.get(pk=pk).status == RunStatus.QUEUED for pk in run_ids)
        time.sleep(1.5)  # the append-only file is synced every second
        killed = stack.kill("redis")
        stack.wait_restarted("redis", killed)
        wait_until(lambda: _answers(stack), 30, "Redis to answer again")
        # The requeue sweep (every 2 s here) sends the waiting runs again: duplicates of what Redis kept.
        wait_until(lambda: stack.redis().llen("local") >= 6, 60, "the queued runs to be sent again")
    finally:
        stack.supervisorctl("start", "worker")
    for run_id in run_ids:
        run = wait_final(run_id, stack=stack)
        assert run.status == RunStatus.COMPLETED, run.reason
        assert console_lines(run_id) == ["line 0", "done"]
        statuses = list(run.status_changes.values_list("status", flat=True))
        assert statuses.count("Preparing") == 1 and statuses.count("Running") == 1
        assert run.metric_series.get(name="ran").count == 1


def _answers(stack) -> bool:
    try:
        return stack.redis().ping()
    except Exception:  # noqa: BLE001 - not up yet
        return False
