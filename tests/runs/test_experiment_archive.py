"""Archiving and restoring an experiment: writers only, POST only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs.models import Experiment
from tests.conftest import assert_sent_to_sign_in, login, make_run, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


URL = "/w/lab/experiments/mnist/archive/"


@pytest.fixture
def experiment(cast, workspace) -> Experiment:
    return make_run(workspace, cast["carol"], experiment="mnist").experiment


def archived(experiment) -> bool:
    experiment.refresh_from_db()
    return experiment.archived


def test_it_is_at_the_expected_url():
    assert reverse("experiment_archive", args=["lab", "mnist"]) == URL


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_a_writer_archives_an_experiment(client, cast, experiment, who):
    login(client, cast[who])
    response = client.post(URL, {"archived": "on"}, follow=True)
    assert response.redirect_chain == [("/w/lab/experiments/mnist/", 302)]
    assert archived(experiment)
    page = text(response)
    assert "Experiment mnist archived: it is hidden from the list" in page
    assert '<span class="tag">archived</span>' in page and ">Unarchive</button>" in page
    assert ">mnist<" not in text(client.get("/w/lab/experiments/"))


def test_a_writer_restores_an_archived_experiment(client, cast, experiment):
    experiment.set_archived(True)
    login(client, cast["carol"])
    response = client.post(URL, {}, follow=True)
    assert not archived(experiment)
    assert "Experiment mnist restored." in text(response)
    assert ">mnist<" in text(client.get("/w/lab/experiments/"))


def test_it_answers_404_for_an_unknown_experiment(client, cast, experiment):
    login(client, cast["alice"])
    assert client.post("/w/lab/experiments/nothing/archive/", {"archived": "on"}).status_code == 404


def test_it_answers_404_for_an_experiment_of_another_workspace(client, cast, experiment):
    from studio.models import Workspace

    foreign = make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret").experiment
    login(client, cast["alice"])
    assert client.post("/w/lab/experiments/secret/archive/", {"archived": "on"}).status_code == 404
    assert not archived(foreign)


def test_it_refuses_a_reader_and_changes_nothing(client, cast, experiment):
    login(client, cast["bob"])
    assert client.post(URL, {"archived": "on"}).status_code == 403
    assert not archived(experiment)
    experiment.set_archived(True)
    assert client.post(URL, {}).status_code == 403
    assert archived(experiment)


def test_it_hides_the_workspace_from_an_outsider_and_changes_nothing(client, cast, experiment):
    login(client, cast["charlie"])
    assert client.post(URL, {"archived": "on"}).status_code == 404
    assert not archived(experiment)


def test_it_sends_an_anonymous_visitor_to_sign_in_and_changes_nothing(client, experiment):
    assert_sent_to_sign_in(client.post(URL, {"archived": "on"}), URL)
    assert not archived(experiment)


def test_it_refuses_a_get_and_changes_nothing(client, cast, experiment):
    login(client, cast["alice"])
    assert client.get(URL, {"archived": "on"}).status_code == 405
    assert not archived(experiment)


def test_it_answers_400_for_a_bad_archived_value_and_changes_nothing(client, cast, experiment):
    login(client, cast["alice"])
    assert client.post(URL, {"archived": "maybe"}).status_code == 400
    assert not archived(experiment)
