"""The experiments list: run count and latest status per experiment; archived ones on request."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from runs.models import Experiment, RunStatus
from tests.conftest import assert_sent_to_sign_in, login, make_run, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


URL = "/w/lab/experiments/"


def row(page: str, name: str) -> str:
    start = page.index(f'<a href="/w/lab/experiments/{name}/">{name}</a>')
    return page[start : page.index("</tr>", start)]


def words(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_it_is_at_the_expected_url():
    assert reverse("experiment_list", args=["lab"]) == URL


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_shows_the_list_to_every_member(client, cast, workspace, who):
    make_run(workspace, cast["carol"], experiment="mnist")
    login(client, cast[who])
    response = client.get(URL)
    assert response.status_code == 200
    assert "mnist" in text(response)


def test_it_hides_the_workspace_from_an_outsider(client, cast, workspace):
    login(client, cast["charlie"])
    assert client.get(URL).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, workspace):
    assert_sent_to_sign_in(client.get(URL), URL)


def test_it_refuses_a_post(client, cast, workspace):
    login(client, cast["alice"])
    assert client.post(URL).status_code == 405


def test_it_shows_the_run_count_and_the_latest_status(client, cast, workspace):
    make_run(workspace, cast["carol"], experiment="mnist")
    latest = make_run(workspace, cast["carol"], experiment="mnist")
    latest.transition(RunStatus.CANCELED, from_states=(RunStatus.QUEUED,))
    make_run(workspace, cast["carol"], experiment="cifar")
    login(client, cast["bob"])
    page = text(client.get(URL))
    mnist, cifar = row(page, "mnist"), row(page, "cifar")
    assert words(mnist).startswith("mnist 2 runs (no child runs)") and 'data-status="Canceled"' in mnist
    assert words(cifar).startswith("cifar 1 run (no child runs)") and 'data-status="Queued"' in cifar


def test_it_lists_experiments_by_name(client, cast, workspace):
    make_run(workspace, cast["carol"], experiment="zeta")
    make_run(workspace, cast["carol"], experiment="alpha")
    login(client, cast["alice"])
    page = text(client.get(URL))
    assert page.index(">alpha<") < page.index(">zeta<")


def test_it_shows_an_experiment_without_runs_as_such(client, cast, workspace):
    Experiment.objects.create(workspace=workspace, name="empty")
    login(client, cast["alice"])
    assert "0 runs (no child runs)" in words(row(text(client.get(URL)), "empty"))
    assert "no runs" in row(text(client.get(URL)), "empty")


def test_it_hides_archived_experiments_unless_asked(client, cast, workspace):
    make_run(workspace, cast["carol"], experiment="current")
    make_run(workspace, cast["carol"], experiment="old").experiment.set_archived(True)
    login(client, cast["alice"])
    page = text(client.get(URL))
    assert ">current<" in page and ">old<" not in page
    assert "Show archived (1)" in page
    shown = text(client.get(URL, {"archived": "on"}))
    assert ">current<" in shown and ">old<" in shown
    assert "archived</span>" in row(shown, "old")
    assert "Hide archived" in shown


def test_it_says_so_when_every_experiment_is_archived(client, cast, workspace):
    make_run(workspace, cast["carol"], experiment="old").experiment.set_archived(True)
    login(client, cast["alice"])
    assert "No experiments (there are 1 archived)." in text(client.get(URL))


def test_it_never_lists_experiments_of_another_workspace(client, cast, workspace):
    from studio.models import Workspace

    make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret-project")
    login(client, cast["alice"])
    assert "secret-project" not in text(client.get(URL, {"archived": "on"}))


def test_it_answers_400_for_a_bad_archived_value(client, cast, workspace):
    login(client, cast["alice"])
    assert client.get(URL, {"archived": "maybe"}).status_code == 400
