"""Ctrl-C on `studioctl.py start`: the runs that go are canceled with a clear reason, their scripts stop, and nothing
stays Running. In a module of its own: another supervised studio on the same database would adopt this one's runs
while its worker is stopped (one database, one studio)."""

from __future__ import annotations

import json

import pytest

from runs import storage
from runs.models import Run, RunStatus
from tests.faults.conftest import wait_lines
from tests.stack import SupervisedStack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_ctrl_c_cancels_the_runs_that_go_saying_the_studio_was_stopped_and_leaves_nothing_running(
        e2e_env, studio_services, token):
    stack = SupervisedStack(e2e_env, studio_services["data_dir"])
    try:
        script = "import time\nprint('line 0', flush=True)\ntime.sleep(600)\n"
        running = stack.submit(token, script)
        wait_lines(running, 1)
        stack.supervisorctl("stop", "worker")  # a second run waits in the queue
        queued = stack.submit(token, script)
        stack.supervisorctl("start", "worker")
        stack.stop_like_ctrl_c()
    finally:
        stack.stop()
    for run_id in (running, queued):
        run = Run.objects.get(pk=run_id)
        assert run.status == RunStatus.CANCELED and run.reason.startswith("The studio was stopped."), (
            f"run {run_id}: {run.status}: {run.reason}\n{stack.logs()}")
    state = json.loads((storage.run_dir(running) / "keeper" / "state.json").read_text())
    for pid in (state["child_pid"], state["keeper_pid"]):
        assert not _alive(pid), f"process {pid} of the canceled run still runs"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
