"""Endpoints survive the death of the studio's processes (supervised as `studioctl.py start` runs them):

- kill -9 the endpoints' controller under steady scoring traffic: not one request fails, the restarted controller
  adopts the running instance (same process) instead of starting another;
- kill -9 the scoring gateway: supervisord starts it again and scoring answers within seconds, the instance
  untouched; every request the new gateway answered is recorded.
"""

from __future__ import annotations

import threading
import time

import pytest

from endpoints import services as endpoint_services
from endpoints.models import DeploymentState, Instance, RequestRecord
from tests.endpoints.conftest import IDENTITY, call, register_files, wait_state
from tests.services import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class Loop:
    """Scoring requests one after another until stopped: (time, status) of each."""

    def __init__(self, url: str, key: str):
        self.url, self.key = url, key
        self.results: list[tuple[float, int]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                status = call(self.url, {"x": 1}, key=self.key, timeout=10)[0]
            except OSError:
                status = 0
            self.results.append((time.monotonic(), status))
            time.sleep(0.01)

    def stop(self) -> list[tuple[float, int]]:
        self.stopped.set()
        self.thread.join(timeout=30)
        return self.results


def test_the_controller_and_the_gateway_die_and_scoring_goes_on(stack, cast, workspace):
    alice = cast["alice"]
    version = register_files(workspace, alice, "echo", {"prefix.txt": b"v1"})
    endpoint = endpoint_services.create_endpoint(workspace, alice, "echo")
    deployment = endpoint_services.create_deployment(
        endpoint, alice, "blue", model=f"echo:{version.version}", script=("score.py", IDENTITY.encode()),
        compute_target=workspace.compute_targets.get(name="local"))
    wait_state(deployment, DeploymentState.HEALTHY, timeout=90)
    url = f"http://127.0.0.1:{stack.env['STUDIO_GATEWAY_PORT']}/endpoints/lab/echo/score"
    key = endpoint_services.keys(endpoint)["primary"]
    wait_until(lambda: call(url, {"x": 1}, key=key)[0] == 200, 20, "the supervised gateway to route")
    instance = Instance.objects.get(deployment=deployment)

    loop = Loop(url, key)
    time.sleep(1)
    old = stack.kill("endpoints")
    stack.wait_restarted("endpoints", old, ready="started")
    time.sleep(3)  # a few reconcile rounds of the new controller
    results = loop.stop()
    assert results and {status for _, status in results} == {200}, sorted({s for _, s in results})
    assert list(Instance.objects.filter(deployment=deployment).values_list("pk", "handle")) == [
        (instance.pk, instance.handle)]  # adopted, not started again

    loop = Loop(url, key)
    time.sleep(1)
    old = stack.kill("gateway")
    killed_at = time.monotonic()
    stack.wait_restarted("gateway", old, ready="listening")
    wait_until(lambda: loop.results and loop.results[-1][1] == 200 and loop.results[-1][0] > killed_at, 30,
               "scoring through the restarted gateway")
    time.sleep(1)
    results = loop.stop()
    back = next(at for at, status in results if at > killed_at and status == 200)
    assert back - killed_at < 10, f"scoring came back {back - killed_at:.1f} s after the kill"
    assert all(status == 200 for at, status in results if at > back)
    assert Instance.objects.get(deployment=deployment).handle == instance.handle
    answered_after = sum(1 for at, status in results if at > back)
    wait_until(lambda: RequestRecord.objects.filter(endpoint=endpoint).count() >= answered_after, 20,
               "the requests answered by the new gateway to be recorded")
