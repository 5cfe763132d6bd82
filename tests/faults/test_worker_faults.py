"""Workers die and stall while runs go on: the run completes as if nothing happened.

The worker's main process is killed (supervisord starts a new one, which adopts the run at once), the pool process
watching the run is killed (the reaper notices the dead watcher and another pool process adopts the run), and the
whole worker is stopped (SIGSTOP) for longer than the lost-after window and then continued.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from runs.models import MetricSeries, Run, RunStatus
from tests.faults.conftest import STEADY, assert_nothing_lost, wait_final, wait_lines

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
STEPS = 600


def test_killing_the_workers_main_process_mid_run_loses_nothing(stack, token):
    run_id = stack.submit(token, STEADY, env_vars=f"STEPS={STEPS}")
    wait_lines(run_id, 100)
    killed = stack.kill("worker")
    stack.wait_restarted("worker", killed, ready="ready.")
    run = wait_final(run_id, stack=stack)
    assert_nothing_lost(stack, run, STEPS)
    assert run.worker and not run.worker.endswith(f":{killed}")


def test_killing_the_pool_process_watching_the_run_loses_nothing(stack, token):
    run_id = stack.submit(token, STEADY, env_vars=f"STEPS={STEPS}")
    wait_lines(run_id, 100)
    watcher = int(Run.objects.get(pk=run_id).worker.rsplit(":", 1)[1])
    assert watcher != stack.pid_of("worker")  # a pool process, not the main one
    os.kill(watcher, signal.SIGKILL)
    run = wait_final(run_id, stack=stack)
    assert_nothing_lost(stack, run, STEPS)
    assert not run.worker.endswith(f":{watcher}")


def test_a_worker_stopped_past_the_lost_after_window_never_ends_a_run_whose_script_goes_on(stack, token):
    steps = 900
    run_id = stack.submit(token, STEADY, env_vars=f"STEPS={steps}")
    wait_lines(run_id, 100)
    worker = stack.pid_of("worker")
    group = os.getpgid(worker)
    os.killpg(group, signal.SIGSTOP)  # the main process and its pool; the script's keeper has a session of its own
    seen = set()
    try:
        deadline = time.monotonic() + 8  # the window is 3 s (STUDIO_RUN_LOST_AFTER_SECONDS), the reaper runs each 1 s
        while time.monotonic() < deadline:
            seen.add(Run.objects.get(pk=run_id).status)
            time.sleep(0.2)
    finally:
        os.killpg(group, signal.SIGCONT)
    assert RunStatus.NOT_RESPONDING in seen
    assert not seen & {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED}
    run = wait_final(run_id, stack=stack)
    assert_nothing_lost(stack, run, steps)
    assert MetricSeries.objects.get(run=run, name="loss").count == steps
    # NotResponding -> Running kept the start: the duration covers the whole run, pause included.
    assert (run.ended_at - run.started_at).total_seconds() >= 8


def test_restarting_the_worker_the_way_supervisord_stops_it_loses_nothing(stack, token):
    """A stop (SIGQUIT: Celery's cold shutdown, which ends its pool processes with SystemExit) is not a cancel."""
    run_id = stack.submit(token, STEADY, env_vars=f"STEPS={STEPS}")
    wait_lines(run_id, 100)
    stack.supervisorctl("restart", "worker")
    run = wait_final(run_id, stack=stack)
    assert_nothing_lost(stack, run, STEPS)
