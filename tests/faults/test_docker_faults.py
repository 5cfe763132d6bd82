"""Docker runs on the real engine: a run outlives the worker that started its container, and a container gets
nothing of the studio but its API. The supervised web server listens on the Docker bridge's gateway too, so the SDK
in the container reaches it at host.docker.internal:<port> although the studio listens on 127.0.0.1."""

from __future__ import annotations

import re

import httpx
import pytest

from runs import storage
from runs.models import RunStatus
from tests.docker.conftest import _engine_problem
from tests.faults.conftest import ATTEMPT, EPOCHS, STEADY, assert_nothing_lost, wait_final, wait_lines
from tests.stack import SupervisedStack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
QUEUE = "docker-faults"
STEPS = 500


@pytest.fixture(scope="module")
def docker_stack(e2e_env, studio_services):
    problem = _engine_problem()
    if problem:
        pytest.skip(problem)
    running = SupervisedStack(e2e_env, studio_services["data_dir"], queues=f"studio,local,builds,{QUEUE}")
    yield running
    running.stop()


@pytest.fixture
def target(workspace):
    return workspace.compute_targets.create(name="engine", kind="docker", docker_url="unix:///var/run/docker.sock",
                                            queue=QUEUE)


def test_killing_the_worker_mid_docker_run_loses_nothing(docker_stack, token, target):
    stack = docker_stack
    run_id = stack.submit(token, STEADY, compute_target="engine", env_vars=f"STEPS={STEPS}")
    wait_lines(run_id, 100, timeout=120)
    killed = stack.kill("worker")
    stack.wait_restarted("worker", killed, ready="ready.")
    run = wait_final(run_id, stack=stack)
    assert_nothing_lost(stack, run, STEPS)


PROBE = ATTEMPT + r"""
attempt("docker socket", lambda: os.path.exists("/var/run/docker.sock") and "present")
attempt("studio data", lambda: os.path.exists(os.environ["DATA"]) and "present")
attempt("environment secrets", lambda: [k for k in os.environ if any(w in k for w in ("SECRET", "REDIS", "DATABASE"))])
attempt("redis port", lambda: socket.create_connection(("host.docker.internal", int(os.environ["KV_PORT"])), timeout=3))
from studio_sdk import Run
Run.get_context().log("reached", 1)
print("line 0", flush=True)
"""


def test_a_container_gets_nothing_of_the_studio_but_its_api(docker_stack, token, target):
    stack = docker_stack
    env_vars = f"DATA={storage.run_dir(0).parent.parent}\nKV_PORT={stack.redis_port}"
    run = wait_final(stack.submit(token, PROBE, compute_target="engine", env_vars=env_vars), stack=stack)
    console = storage.console_log_path(run.pk).read_text()
    assert run.status == RunStatus.COMPLETED and run.reason == "", run.reason + console
    assert re.findall(r"^GOT .*$", console, re.M) == [], console
    assert re.findall(r"^REFUSED ([^:]+):", console, re.M) == [
        "docker socket", "studio data", "environment secrets", "redis port"]
    assert run.metric_series.get(name="reached").count == 1  # the API is what it does reach


def test_canceling_a_docker_run_lets_its_sdk_deliver_what_it_logged(docker_stack, token, target):
    stack = docker_stack
    run_id = stack.submit(token, EPOCHS, compute_target="engine")
    wait_lines(run_id, 8, timeout=120)
    response = httpx.post(f"{stack.url}/api/v1/workspaces/lab/runs/{run_id}/cancel",
                          headers={"Authorization": f"Token {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    run = wait_final(run_id, stack=stack)
    assert run.status == RunStatus.CANCELED
    printed = [line for line in storage.console_log_path(run_id).read_text().splitlines() if line.startswith("line ")]
    assert run.metric_series.get(name="epoch_loss").count == len(printed) >= 8
