"""Counts that agree: wherever a run count appears, top-level runs and all runs (with child runs) are both shown."""

from __future__ import annotations

import re

import pytest

from runs.models import RunStatus
from tests.conftest import login, make_run, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
COUNTS = "3 runs (6 with child runs)"


@pytest.fixture
def digits(cast, workspace):
    """Three top-level runs; the first has three child runs (a sweep, say)."""
    runs = [make_run(workspace, cast["carol"], experiment="digits") for _ in range(3)]
    runs[0].transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED,))
    for fold in range(3):
        runs[0].create_child(f"fold-{fold}")
    return runs


def words(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", text(response)).split())


def test_the_experiments_list_shows_both(client, cast, digits):
    login(client, cast["bob"])
    assert f"digits {COUNTS}" in words(client.get("/w/lab/experiments/"))


def test_the_experiment_page_shows_both_next_to_its_status_filter(client, cast, digits):
    login(client, cast["bob"])
    response = client.get("/w/lab/experiments/digits/")
    assert "All (3)" in text(response)
    nav = text(response).split('aria-label="Filter by status"', 1)[1].split("</nav>", 1)[0]
    assert COUNTS in " ".join(re.sub(r"<[^>]+>", " ", nav).split())


def test_the_dashboard_shows_both(client, cast, digits, workspace):
    make_run(workspace, cast["carol"], experiment="other")
    login(client, cast["bob"])
    assert "2 experiments · 4 runs (7 with child runs)" in words(client.get("/w/lab/"))


def test_an_experiment_without_child_runs_says_so(client, cast, workspace):
    make_run(workspace, cast["carol"], experiment="plain")
    login(client, cast["bob"])
    assert "1 run (no child runs)" in words(client.get("/w/lab/experiments/plain/"))


def test_the_api_agrees_with_the_pages(client, cast, digits):
    from studio.models import ApiToken

    _, secret = ApiToken.issue(cast["bob"], "counts")
    headers = {"Authorization": f"Token {secret}"}
    body = client.get("/api/v1/workspaces/lab/experiments/digits", headers=headers).json()
    assert (body["runs"], body["all_runs"]) == (3, 6)
    (item,) = client.get("/api/v1/workspaces/lab/experiments", headers=headers).json()["items"]
    assert (item["runs"], item["all_runs"]) == (3, 6)
