"""The beat task that notices runs whose worker stopped heartbeating."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from runs.models import Run, RunStatus
from runs.tasks import reap_lost_runs
from tests.conftest import make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


def running_with_heartbeat(workspace, user, seconds_ago: float) -> Run:
    run = make_run(workspace, user)
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now() - timedelta(seconds=seconds_ago)
    )
    return run


def test_a_run_with_a_late_heartbeat_is_marked_not_responding(cast, workspace, settings):
    settings.STUDIO_RUN_HEARTBEAT_SECONDS = 5
    run = running_with_heartbeat(workspace, cast["carol"], seconds_ago=30)
    reap_lost_runs()
    run.refresh_from_db()
    assert run.status == RunStatus.NOT_RESPONDING
    assert list(run.status_changes.values_list("status", flat=True))[-1] == "NotResponding"


def test_a_run_whose_worker_is_lost_ends_failed_with_the_reason(cast, workspace, settings):
    settings.STUDIO_RUN_LOST_AFTER_SECONDS = 120
    run = running_with_heartbeat(workspace, cast["carol"], seconds_ago=600)
    assert reap_lost_runs() == 1
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "stopped responding" in run.reason
    assert run.ended_at is not None


def test_a_healthy_or_finished_run_is_left_alone(cast, workspace):
    healthy = running_with_heartbeat(workspace, cast["carol"], seconds_ago=1)
    finished = make_run(workspace, cast["carol"])
    Run.objects.filter(pk=finished.pk).update(status=RunStatus.COMPLETED, heartbeat_at=timezone.now() - timedelta(days=1))
    assert reap_lost_runs() == 0
    assert Run.objects.get(pk=healthy.pk).status == RunStatus.RUNNING
    assert Run.objects.get(pk=finished.pk).status == RunStatus.COMPLETED


def test_a_late_message_never_rewrites_a_final_state(cast, workspace):
    run = make_run(workspace, cast["carol"])
    assert run.request_cancel("Canceled by carol.")
    assert not run.transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED, RunStatus.STARTING))
    assert not run.transition(RunStatus.PREPARING, from_states=(RunStatus.QUEUED,))
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELED
