"""Canceling a run: writers only, POST only; a queued run ends at once, a finished one stays as it was."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from runs import live
from runs.models import Run, RunStatus
from tests.conftest import assert_sent_to_sign_in, login, make_run, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


@pytest.fixture
def run(cast, workspace, redis_client) -> Run:
    run = make_run(workspace, cast["carol"], experiment="mnist")
    redis_client.delete(live.cancel_key(run.pk), live.stream_key(run.pk))  # run ids are reused across tests
    return run


def url(run) -> str:
    return f"/w/lab/runs/{run.pk}/cancel/"


def state(run) -> tuple:
    run.refresh_from_db()
    return run.status, run.reason, run.cancel_requested_at, run.ended_at


def test_it_is_at_the_expected_url(run):
    assert reverse("run_cancel", args=["lab", run.pk]) == url(run)


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_a_writer_cancels_a_queued_run_at_once(client, cast, run, who):
    login(client, cast[who])
    response = client.post(url(run), follow=True)
    assert response.redirect_chain == [(f"/w/lab/runs/{run.pk}/", 302)]
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELED
    assert run.reason == f"Canceled by {who}."
    assert run.ended_at is not None
    assert list(run.status_changes.values_list("status", flat=True)) == [RunStatus.QUEUED, RunStatus.CANCELED]
    page = text(response)
    assert "Cancel requested: the run is being stopped." in page
    assert 'data-status="Canceled"' in page and f"Canceled by {who}." in page


def test_canceling_a_queued_run_tells_live_viewers(client, cast, run, redis_client):
    login(client, cast["carol"])
    client.post(url(run))
    entries = redis_client.xrange(live.stream_key(run.pk))
    assert entries[-1][1] == {b"k": b"status", b"v": b"Canceled"}


def test_a_running_run_is_asked_to_stop_by_its_worker(client, cast, run):
    assert run.transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED,))
    login(client, cast["alice"])
    response = client.post(url(run), follow=True)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    assert run.cancel_requested_at is not None
    assert live.cancel_reason(run.pk) == "Canceled by alice."
    assert "Cancel requested" in text(response)


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED])
def test_a_finished_run_stays_as_it_was(client, cast, run, status):
    run.transition(status, from_states=(RunStatus.QUEUED,), reason="It ended.")
    before = state(run)
    login(client, cast["carol"])
    response = client.post(url(run), follow=True)
    assert state(run) == before
    assert live.cancel_reason(run.pk) is None
    assert f"The run already ended ({run.get_status_display()})." in text(response)


def test_it_refuses_a_reader_and_the_run_stays_queued(client, cast, run):
    before = state(run)
    login(client, cast["bob"])
    assert client.post(url(run)).status_code == 403
    assert state(run) == before and run.status == RunStatus.QUEUED
    assert live.cancel_reason(run.pk) is None


def test_it_refuses_a_reader_of_a_running_run_and_sends_no_signal(client, cast, run):
    run.transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED,))
    before = state(run)
    login(client, cast["bob"])
    assert client.post(url(run)).status_code == 403
    assert state(run) == before
    assert live.cancel_reason(run.pk) is None


def test_it_hides_the_workspace_from_an_outsider_and_changes_nothing(client, cast, run):
    before = state(run)
    login(client, cast["charlie"])
    assert client.post(url(run)).status_code == 404
    assert state(run) == before


def test_it_answers_404_for_a_run_of_another_workspace_and_changes_nothing(client, cast, run):
    from studio.models import Workspace

    foreign = make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret")
    login(client, cast["alice"])
    assert client.post(f"/w/lab/runs/{foreign.pk}/cancel/").status_code == 404
    foreign.refresh_from_db()
    assert foreign.status == RunStatus.QUEUED


def test_it_sends_an_anonymous_visitor_to_sign_in_and_changes_nothing(client, run):
    before = state(run)
    assert_sent_to_sign_in(client.post(url(run)), url(run))
    assert state(run) == before


def test_it_refuses_a_get_and_changes_nothing(client, cast, run):
    before = state(run)
    login(client, cast["alice"])
    assert client.get(url(run)).status_code == 405
    assert state(run) == before


def test_it_refuses_a_cross_site_post_without_the_csrf_token(cast, run):
    strict = Client(enforce_csrf_checks=True)
    login(strict, cast["alice"])
    before = state(run)
    assert strict.post(url(run)).status_code == 403
    assert state(run) == before
