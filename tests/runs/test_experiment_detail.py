"""An experiment's page: its runs newest first, a status filter, keyset pages and the htmx table partial."""

from __future__ import annotations

import html
import re

import pytest
from django.urls import reverse

from runs.models import Experiment, Run, RunStatus
from runs.views import PAGE_SIZE
from tests.conftest import assert_sent_to_sign_in, login, make_run, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


URL = "/w/lab/experiments/mnist/"


@pytest.fixture
def run(cast, workspace) -> Run:
    return make_run(workspace, cast["carol"], experiment="mnist", display_name="baseline")


def add_runs(template: Run, count: int, status: str = RunStatus.QUEUED) -> None:
    """Cheap runs sharing one snapshot."""
    Run.objects.bulk_create(
        Run(
            workspace=template.workspace,
            experiment=template.experiment,
            snapshot=template.snapshot,
            entry_script="train.py",
            compute_target=template.compute_target,
            status=status,
        )
        for _ in range(count)
    )


def shown_run_ids(response) -> list[int]:
    return [int(n) for n in re.findall(r'<span class="muted">#(\d+)</span>', response.content.decode())]


def pager_link(response, label: str) -> str | None:
    match = re.search(r'<a href="(\?[^"]*)">' + re.escape(label), response.content.decode())
    return html.unescape(match.group(1)) if match else None


def test_it_is_at_the_expected_url():
    assert reverse("experiment_detail", args=["lab", "mnist"]) == URL


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_shows_the_experiment_and_its_runs_to_every_member(client, cast, run, who):
    login(client, cast[who])
    response = client.get(URL)
    assert response.status_code == 200
    page = text(response)
    assert '<span class="muted">Experiment</span> mnist' in page
    assert "baseline" in page and shown_run_ids(response) == [run.pk]


def test_it_offers_submit_and_archive_to_writers_only(client, cast, run):
    login(client, cast["carol"])
    page = text(client.get(URL))
    assert "/w/lab/runs/new/?experiment=mnist" in page and ">Archive</button>" in page
    login(client, cast["bob"])
    page = text(client.get(URL))
    assert "/w/lab/runs/new/" not in page and ">Archive</button>" not in page


def test_it_hides_the_workspace_from_an_outsider(client, cast, run):
    login(client, cast["charlie"])
    assert client.get(URL).status_code == 404


def test_it_answers_404_for_an_experiment_of_another_workspace(client, cast, workspace):
    from studio.models import Workspace

    make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret")
    login(client, cast["alice"])
    assert client.get("/w/lab/experiments/secret/").status_code == 404
    assert client.get("/w/lab/experiments/nothing/").status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, run):
    assert_sent_to_sign_in(client.get(URL), URL)


def test_it_refuses_a_post(client, cast, run):
    login(client, cast["alice"])
    assert client.post(URL).status_code == 405


def test_it_filters_runs_by_status_and_counts_each_status(client, cast, run):
    canceled = make_run(run.workspace, cast["carol"], experiment="mnist")
    canceled.transition(RunStatus.CANCELED, from_states=(RunStatus.QUEUED,))
    login(client, cast["bob"])
    response = client.get(URL, {"status": "Canceled"})
    assert shown_run_ids(response) == [canceled.pk]
    page = text(response)
    assert "All (2)" in page and "Queued (1)" in page and "Canceled (1)" in page
    assert shown_run_ids(client.get(URL, {"status": "Queued"})) == [run.pk]
    assert shown_run_ids(client.get(URL)) == [canceled.pk, run.pk]


def test_it_says_so_when_no_run_has_the_status(client, cast, run):
    login(client, cast["alice"])
    page = text(client.get(URL, {"status": "Failed"}))
    assert "No Failed runs in this experiment." in page and "Show all runs" in page


def test_it_says_so_when_the_experiment_has_no_runs(client, cast, workspace):
    Experiment.objects.create(workspace=workspace, name="empty")
    login(client, cast["alice"])
    assert "No runs in this experiment yet." in text(client.get("/w/lab/experiments/empty/"))


@pytest.mark.parametrize(
    "query",
    [{"status": "Bogus"}, {"before": "abc"}, {"before": "0"}, {"after": "-1"}, {"before": "5", "after": "3"},
     {"sort": "nothing"}, {"tag": "no spaces allowed"}, {"range": "loss:1:0"}, {"children_of": "-1"}],
)
def test_it_answers_400_for_a_bad_query(client, cast, run, query):
    login(client, cast["alice"])
    assert client.get(URL, query).status_code == 400


def test_older_and_newer_links_walk_every_run_exactly_once(client, cast, run):
    add_runs(run, 119)
    everything = list(Run.objects.filter(experiment=run.experiment).order_by("-id").values_list("id", flat=True))
    assert len(everything) == 120
    login(client, cast["bob"])

    pages, response = [], client.get(URL)
    assert pager_link(response, "← Newer") is None
    while True:
        ids = shown_run_ids(response)
        assert 0 < len(ids) <= PAGE_SIZE
        pages.append(ids)
        older = pager_link(response, "Older →")
        if older is None:
            break
        response = client.get(URL + older)
    assert [len(ids) for ids in pages] == [50, 50, 20]
    assert sum(pages, []) == everything

    back = [pages[-1]]
    while (newer := pager_link(response, "← Newer")) is not None:
        response = client.get(URL + newer)
        back.append(shown_run_ids(response))
    assert back[::-1] == pages
    assert pager_link(response, "Older →") is not None


def test_pages_keep_the_status_filter(client, cast, run):
    add_runs(run, 60, status=RunStatus.FAILED)
    add_runs(run, 5)
    failed = list(Run.objects.filter(status=RunStatus.FAILED).order_by("-id").values_list("id", flat=True))
    login(client, cast["alice"])
    first = client.get(URL, {"status": "Failed"})
    older = pager_link(first, "Older →")
    assert older.startswith("?status=Failed&before=")
    second = client.get(URL + older)
    assert shown_run_ids(first) + shown_run_ids(second) == failed
    assert pager_link(second, "Older →") is None
    newer = pager_link(second, "← Newer")
    assert newer.startswith("?status=Failed&after=")
    assert shown_run_ids(client.get(URL + newer)) == shown_run_ids(first)


def test_an_htmx_request_for_the_runs_table_gets_only_the_table(client, cast, run):
    login(client, cast["alice"])
    response = client.get(URL, {"status": "Queued"}, headers={"HX-Request": "true", "HX-Target": "runs-table"})
    assert response.status_code == 200
    body = response.content.decode().strip()
    assert body.startswith('<div id="runs-table">') and body.endswith("</div>")
    assert "<html" not in body and "status-filter" not in body
    assert shown_run_ids(response) == [run.pk]


def test_an_htmx_request_for_another_target_gets_the_whole_page(client, cast, run):
    login(client, cast["alice"])
    response = client.get(URL, headers={"HX-Request": "true", "HX-Target": "main"})
    assert "<html" in response.content.decode()


def test_child_runs_are_listed_under_their_parent_not_at_the_top_level(client, cast, run):
    child = run.create_child("fold 1")
    login(client, cast["bob"])
    response = client.get(URL)
    assert shown_run_ids(response) == [run.pk]
    assert "All (1)" in text(response) and "Running (" not in text(response)
    assert f'hx-get="/w/lab/experiments/mnist/?children_of={run.pk}' in response.content.decode()
    assert shown_run_ids(client.get(URL, {"children_of": run.pk})) == [child.pk]


def test_sorted_pages_use_below_and_above_links(client, cast, run):
    add_runs(run, 60)
    login(client, cast["alice"])
    first = client.get(URL, {"sort": "status"})
    assert pager_link(first, "Next →").startswith("?sort=status&below=")
    second = client.get(URL + pager_link(first, "Next →"))
    assert len(shown_run_ids(first)) == PAGE_SIZE and len(shown_run_ids(second)) == 11
    assert pager_link(second, "← Previous").startswith("?sort=status&above=")
    assert shown_run_ids(client.get(URL + pager_link(second, "← Previous"))) == shown_run_ids(first)
