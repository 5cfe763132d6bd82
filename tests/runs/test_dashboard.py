"""A workspace's dashboard: recent runs across experiments and the workspace switcher."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from runs.models import Run
from tests.conftest import login, make_run, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


def url(name="lab") -> str:
    return reverse("dashboard", args=[name])


def shown_run_ids(response) -> list[int]:
    return [int(n) for n in re.findall(r'<span class="muted">#(\d+)</span>', response.content.decode())]


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_shows_the_dashboard_to_every_member(client, cast, who):
    login(client, cast[who])
    response = client.get(url())
    assert response.status_code == 200
    assert "<h1>lab</h1>" in response.content.decode()


def test_it_hides_the_workspace_from_an_outsider(client, cast):
    login(client, cast["charlie"])
    assert client.get(url()).status_code == 404


def test_it_answers_404_for_a_workspace_that_does_not_exist(client, cast):
    login(client, cast["alice"])
    assert client.get(url("nowhere")).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, workspace):
    response = client.get(url())
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next=/w/lab/"


def test_it_refuses_a_post(client, cast):
    login(client, cast["alice"])
    assert client.post(url()).status_code == 405


def test_it_shows_recent_runs_across_experiments_newest_first(client, cast, workspace):
    first = make_run(workspace, cast["carol"], experiment="alpha", display_name="first run")
    second = make_run(workspace, cast["alice"], experiment="beta", display_name="second run")
    login(client, cast["bob"])
    response = client.get(url())
    page = text(response)
    assert shown_run_ids(response) == [second.pk, first.pk]
    assert "first run" in page and "second run" in page
    assert 'href="/w/lab/experiments/alpha/"' in page and 'href="/w/lab/experiments/beta/"' in page
    assert 'data-status="Queued"' in page
    assert "No runs yet" not in page


def test_it_shows_only_the_twenty_newest_runs(client, cast, workspace):
    run = make_run(workspace, cast["carol"])
    Run.objects.bulk_create(
        Run(
            workspace=workspace,
            experiment=run.experiment,
            snapshot=run.snapshot,
            entry_script="train.py",
            compute_target=run.compute_target,
            status="Queued",
        )
        for _ in range(24)
    )
    login(client, cast["alice"])
    newest = list(Run.objects.order_by("-id").values_list("id", flat=True)[:20])
    assert shown_run_ids(client.get(url())) == newest


def test_it_never_shows_runs_of_another_workspace(client, cast, workspace):
    from studio.models import Workspace

    make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret-project")
    login(client, cast["alice"])
    response = client.get(url())
    assert "secret-project" not in text(response)
    assert shown_run_ids(response) == []


def test_it_invites_a_writer_to_submit_the_first_run(client, cast, workspace):
    login(client, cast["carol"])
    page = text(client.get(url()))
    assert "No runs yet in this workspace." in page
    assert "Submit your first run" in page
    assert f'href="{reverse("run_submit", args=["lab"])}"' in page


def test_it_tells_a_reader_that_runs_will_show_up(client, cast, workspace):
    login(client, cast["bob"])
    page = text(client.get(url()))
    assert "No runs yet in this workspace." in page
    assert "You are a reader here" in page
    assert reverse("run_submit", args=["lab"]) not in page


def test_the_workspace_switcher_lists_only_the_users_workspaces(client, cast, workspace):
    from studio.models import Membership, Role, Workspace

    Membership.objects.create(
        workspace=Workspace.create_with_owner("third", cast["charlie"]), user=cast["alice"], role=Role.READER
    )
    login(client, cast["alice"])
    page = client.get(url()).content.decode()
    switcher = page.split('<details class="switcher">', 1)[1].split("</details>", 1)[0]
    assert re.findall(r'href="/w/([^/]+)/"', switcher) == ["lab", "third"]
    assert "elsewhere" not in switcher
    assert '<a href="/w/lab/" aria-current="true">lab</a>' in switcher
