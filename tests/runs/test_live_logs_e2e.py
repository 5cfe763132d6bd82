"""Live console logs through the real ASGI server (SSE from the run's Redis stream)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from runs import storage
from runs.models import Run, RunStatus
from tests import services
from tests.conftest import login, py_upload
from tests.runs.test_execution_e2e import submit, wait_final

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def session_cookies(user) -> dict[str, str]:
    """The cookie of a fresh signed-in session, for an HTTP client outside Django's test client."""
    client = Client()
    client.force_login(user)
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}


def read_events(base_url: str, path: str, cookies: dict, until: str = "end", timeout: float = 60):
    """(event, data, seconds since connecting) for each SSE message until the `until` event."""
    events, event = [], None
    started = time.monotonic()
    with httpx.stream("GET", base_url + path, cookies=cookies, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:]), time.monotonic() - started))
                if event == until:
                    return events
    return events


def test_lines_reach_the_browser_while_the_run_is_running(client, cast, workspace, worker, web):
    cookies = session_cookies(cast["bob"])  # a reader may watch
    login(client, cast["carol"])
    run = submit(client, workspace, py_upload("import time\nprint('first', flush=True)\ntime.sleep(2)\nprint('second')\n"))
    events = read_events(web, reverse("run_events", args=[workspace.name, run.pk]), cookies)
    lines = [(text, at) for kind, data, at in events if kind == "log" for _source, text in data["lines"]]
    statuses = [data["status"] for kind, data, _ in events if kind == "status"]
    assert [text for text, _ in lines] == ["first", "second"]
    assert lines[1][1] - lines[0][1] > 1.5  # the first line came before the script slept, not at the end
    assert statuses[-1] == "Completed" and "Running" in statuses
    assert events[-1][0] == "end"


def test_what_a_script_prints_never_breaks_or_injects_into_the_page(client, cast, workspace, worker, web):
    cookies = session_cookies(cast["carol"])
    login(client, cast["carol"])
    script = (
        "import sys\n"
        "print('x' * 10_000_000)\n"
        "sys.stdout.flush()\n"
        "sys.stdout.buffer.write(b'bad bytes \\xff\\xfe here\\n')\n"
        "sys.stdout.buffer.flush()\n"
        "print('\\x1b[31m<script>alert(1)</script>\\x1b[0m <a href=\"http://evil\">link</a>')\n"
        "print('after', flush=True)\n"
    )
    run = submit(client, workspace, py_upload(script))
    events = read_events(web, reverse("run_events", args=[workspace.name, run.pk]), cookies)
    texts = [text for kind, data, _ in events if kind == "log" for _s, text in data["lines"]]
    assert texts[0].startswith("x" * 1000) and texts[0].endswith("the full line is in the log file]")
    assert len(texts[0]) < 20_000
    assert texts[1] == "bad bytes \ufffd\ufffd here"
    assert texts[2] == '<script>alert(1)</script> <a href="http://evil">link</a>'  # text; the page inserts it as text
    assert texts[3] == "after"
    wait_final(run)
    assert run.status == RunStatus.COMPLETED
    raw = storage.console_log_path(run.pk).read_bytes()
    assert raw.startswith(b"x" * 10_000_000 + b"\n")  # the file keeps every byte
    page = client.get(reverse("run_detail", args=[workspace.name, run.pk])).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page and 'href="http://evil"' not in page
    assert "\x1b" not in page


def test_a_run_keeps_going_when_the_web_server_restarts(client, cast, workspace, worker, e2e_env, studio_services, tmp_path):
    login(client, cast["carol"])
    first, url = services.start_web(e2e_env, tmp_path)
    run = submit(client, workspace, py_upload("import time\nfor i in range(4):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\n"))
    services.wait_until(lambda: Run.objects.get(pk=run.pk).status == RunStatus.RUNNING, 30, "the run to start")
    first.stop()
    second, url = services.start_web(e2e_env, tmp_path)
    try:
        cookies = session_cookies(cast["carol"])
        events = read_events(url, reverse("run_events", args=[workspace.name, run.pk]), cookies)
        texts = [text for kind, data, _ in events if kind == "log" for _s, text in data["lines"]]
        assert texts == ["tick 0", "tick 1", "tick 2", "tick 3"]
    finally:
        second.stop()
    wait_final(run)
    assert run.status == RunStatus.COMPLETED
