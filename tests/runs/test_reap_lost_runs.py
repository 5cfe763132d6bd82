"""The beat task that notices runs whose worker stopped heartbeating, and the take-over that follows.

The reaper never ends a run: it shows the run NotResponding and asks a worker of the run's queue to adopt it. The
adopting worker fails the run only when its script is really gone (tested here with no keeper left behind), and
starts again a run whose worker died before its script started. Adopting a live script is tested end to end with
real processes in `test_faults_e2e.py`.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from runs import storage
from runs.execution import adopt_run
from runs.models import Run, RunStatus
from runs.tasks import reap_lost_runs
from tests.conftest import make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]

GONE_WORKER = "no-such-host:1"  # a worker of another host: only a late heartbeat makes its runs adoptable


def with_heartbeat(workspace, user, seconds_ago: float, status=RunStatus.RUNNING, worker=GONE_WORKER) -> Run:
    run = make_run(workspace, user)
    Run.objects.filter(pk=run.pk).update(
        status=status, started_at=timezone.now() - timedelta(hours=1), worker=worker,
        heartbeat_at=timezone.now() - timedelta(seconds=seconds_ago),
    )
    run.refresh_from_db()
    return run


def test_a_run_with_a_late_heartbeat_is_shown_not_responding_and_offered_for_adoption(cast, workspace, settings):
    settings.STUDIO_RUN_HEARTBEAT_SECONDS = 5
    run = with_heartbeat(workspace, cast["carol"], seconds_ago=30)
    assert reap_lost_runs() == 1
    run.refresh_from_db()
    assert run.status == RunStatus.NOT_RESPONDING
    assert list(run.status_changes.values_list("status", flat=True))[-1] == "NotResponding"
    # Asked once: the next sweep does not flood the queue while the adoption is on its way.
    assert reap_lost_runs() == 0


def test_a_very_late_heartbeat_never_ends_the_run_by_itself(cast, workspace):
    run = with_heartbeat(workspace, cast["carol"], seconds_ago=86400)
    reap_lost_runs()
    run.refresh_from_db()
    assert run.status == RunStatus.NOT_RESPONDING
    assert run.ended_at is None and run.reason == ""


def test_a_healthy_or_finished_run_is_left_alone(cast, workspace):
    healthy = with_heartbeat(workspace, cast["carol"], seconds_ago=1)
    finished = make_run(workspace, cast["carol"])
    Run.objects.filter(pk=finished.pk).update(status=RunStatus.COMPLETED, heartbeat_at=timezone.now() - timedelta(days=1))
    assert reap_lost_runs() == 0
    assert Run.objects.get(pk=healthy.pk).status == RunStatus.RUNNING
    assert Run.objects.get(pk=finished.pk).status == RunStatus.COMPLETED


def test_a_watched_run_is_not_taken_over(cast, workspace):
    run = with_heartbeat(workspace, cast["carol"], seconds_ago=1)
    assert adopt_run(run.pk) == "still watched"
    run.refresh_from_db()
    assert run.worker == GONE_WORKER and run.status == RunStatus.RUNNING


def test_a_lost_run_whose_script_is_gone_ends_failed_with_the_reason_and_its_folder_removed(cast, workspace):
    run = with_heartbeat(workspace, cast["carol"], seconds_ago=3600, status=RunStatus.NOT_RESPONDING)
    work = storage.work_dir(run.pk)
    work.mkdir(parents=True)
    (work / "train.py").write_text("print('hi')\n")
    adopt_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "script is gone" in run.reason
    assert run.ended_at is not None and run.started_at < run.ended_at
    assert not work.exists()


def test_a_run_whose_worker_died_before_its_script_started_is_queued_again(cast, workspace):
    run = with_heartbeat(workspace, cast["carol"], seconds_ago=3600, status=RunStatus.PREPARING)
    adopt_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert run.worker == "" and run.heartbeat_at is None


def test_a_late_message_never_rewrites_a_final_state(cast, workspace):
    run = make_run(workspace, cast["carol"])
    assert run.request_cancel("Canceled by carol.")
    assert not run.transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED, RunStatus.STARTING))
    assert not run.transition(RunStatus.PREPARING, from_states=(RunStatus.QUEUED,))
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELED
    assert adopt_run(run.pk) == "nothing to adopt"


def test_a_child_run_made_through_the_sdk_follows_its_parent_and_is_never_reaped_by_itself(cast, workspace, settings):
    """A child run has no worker or script of its own (its parent's script logs to it): its parent's heartbeat
    stands for it."""
    settings.STUDIO_RUN_HEARTBEAT_SECONDS = 5
    parent = with_heartbeat(workspace, cast["carol"], seconds_ago=1)
    child = parent.create_child("fold-1")
    assert reap_lost_runs() == 0
    child.refresh_from_db()
    assert child.status == RunStatus.RUNNING
    Run.objects.filter(pk=parent.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=30))
    assert reap_lost_runs() == 1  # the parent only: adopting it adopts its script, which logs to the child
    parent.refresh_from_db()
    child.refresh_from_db()
    assert parent.status == RunStatus.NOT_RESPONDING and child.status == RunStatus.RUNNING
