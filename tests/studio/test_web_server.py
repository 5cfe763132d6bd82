"""The web server's request path (studio/limits.py), through the real ASGI server: sync views run in threads the
server keeps, each request on one thread with its database connection kept for the next, and async views (the live
streams) close theirs as they end. Many requests of both kinds leave a bounded number of open connections and
threads, and requests at once are served at once."""

from __future__ import annotations

import concurrent.futures
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.urls import reverse

from runs.models import RunStatus
from studio.models import ApiToken
from tests import services
from tests.conftest import make_run
from tests.runs.test_live_logs_e2e import read_events, session_cookies

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def own_web(e2e_env, studio_services):
    """A web server of this module's own, whose process is looked at."""
    service, url = services.start_web(e2e_env, studio_services["base"])
    yield service.process.pid, url
    service.stop()


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    return int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("Threads:")))


def test_many_requests_of_every_kind_leave_a_bounded_number_of_connections_and_threads(cast, workspace, own_web):
    pid, url = own_web
    run = make_run(workspace, cast["carol"], experiment="busy")
    assert run.transition(RunStatus.CANCELED, from_states=(RunStatus.QUEUED,))  # its stream ends at once
    _, token = ApiToken.issue(cast["carol"], "web-server test")
    api = {"Authorization": f"Token {token}"}
    cookies = session_cookies(cast["carol"])
    page = f"{url}/w/{workspace.name}/runs/{run.pk}/"
    events = reverse("run_events", args=[workspace.name, run.pk])

    def round_of_requests(client: httpx.Client) -> None:
        assert client.get(f"{url}/api/v1/workspaces/{workspace.name}/runs/{run.pk}", headers=api).status_code == 200
        assert client.get(page).status_code == 200
        assert client.get(f"{url}/no/such/page/").status_code == 404
        assert read_events(url, events, cookies)[-1][0] == "end"

    with httpx.Client(timeout=30, cookies=cookies) as client:
        for _ in range(5):
            round_of_requests(client)
        files, count = open_files(pid), threads(pid)
        for _ in range(60):
            round_of_requests(client)
    assert open_files(pid) <= files + 4, (files, open_files(pid))  # no connection per request left open
    assert threads(pid) <= count + 4, (count, threads(pid))  # no thread per request left behind


def test_requests_at_once_are_served_at_once(cast, workspace, own_web):
    """Threads are kept, not shared: eight clients at once each get their answer, none waits for the others'."""
    _, url = own_web
    _, token = ApiToken.issue(cast["carol"], "web-server test")
    api = {"Authorization": f"Token {token}"}

    def calls(_) -> list[int]:
        with httpx.Client(timeout=30) as client:
            return [client.get(f"{url}/api/v1/workspaces/{workspace.name}/runs", headers=api).status_code
                    for _ in range(10)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = [status for result in pool.map(calls, range(8)) for status in result]
    assert statuses == [200] * 80


def test_with_after_the_server_loads_at_once_and_listens_only_once_the_file_exists(e2e_env, tmp_path):
    """What the start command relies on: the web server loads while `prepare` migrates, and no request reaches it
    before `prepare` made its file."""
    port, ready = services.free_port(), tmp_path / "prepared"
    process = subprocess.Popen([sys.executable, "-m", "studio.serve", "--port", str(port), "--bridge", "",
                                "--after", str(ready)], env=e2e_env, cwd=services.ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(4)  # longer than loading takes here
        assert process.poll() is None and not _listening(port)
        ready.touch()
        services.wait_until(lambda: _listening(port), 20, "the web server to listen")
        assert httpx.get(f"http://127.0.0.1:{port}/accounts/login/").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=20)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
