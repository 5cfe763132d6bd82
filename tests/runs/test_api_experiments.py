"""The experiments of a workspace through the REST API: the list (with run counts, archived ones on request, paged by
name), one experiment, and archiving."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest

from runs.models import Experiment, RunStatus
from studio.models import ApiToken
from tests.conftest import make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]

URL = "/api/v1/workspaces/lab/experiments"


def token_for(user) -> dict:
    return {"Authorization": f"Token {ApiToken.issue(user, 'tests')[1]}"}


def get(client, user, url=URL, query=None):
    return client.get(url, query or {}, headers=token_for(user))


def archive(client, user, name, archived=True):
    return client.post(f"{URL}/{name}/archive", json.dumps({"archived": archived}), content_type="application/json",
                       headers=token_for(user))


def names(response) -> list[str]:
    return [item["name"] for item in response.json()["items"]]


def test_it_lists_the_experiments_by_name(client, cast, workspace):
    for name in ("mnist", "cifar", "digits"):
        make_run(workspace, cast["carol"], experiment=name)
    response = get(client, cast["bob"])
    assert response.status_code == 200
    assert names(response) == ["cifar", "digits", "mnist"]
    assert response.json()["next"] is None


def test_it_counts_top_level_runs_and_all_runs_with_their_children(client, cast, workspace):
    first = make_run(workspace, cast["carol"], experiment="mnist")
    first.transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED,))
    first.create_child("fold-1")
    first.create_child("fold-2")
    latest = make_run(workspace, cast["carol"], experiment="mnist")
    latest.transition(RunStatus.CANCELED, from_states=(RunStatus.QUEUED,))
    (item,) = get(client, cast["bob"]).json()["items"]
    assert item["name"] == "mnist" and item["archived"] is False
    assert item["runs"] == 2 and item["all_runs"] == 4
    assert item["url"] == "/w/lab/experiments/mnist/"
    assert item["created_at"] and item["latest_run_at"]


def test_the_latest_status_is_that_of_the_newest_run(client, cast, workspace):
    make_run(workspace, cast["carol"], experiment="mnist")
    latest = make_run(workspace, cast["carol"], experiment="mnist")
    latest.transition(RunStatus.CANCELED, from_states=(RunStatus.QUEUED,))
    assert get(client, cast["bob"]).json()["items"][0]["latest_status"] == "Canceled"


def test_it_lists_only_the_workspaces_own_experiments(client, cast, workspace):
    make_run(workspace, cast["carol"], experiment="mnist")
    elsewhere = workspace.__class__.objects.get(name="elsewhere")
    make_run(elsewhere, cast["charlie"], experiment="secret")
    assert names(get(client, cast["alice"])) == ["mnist"]


def test_it_hides_archived_experiments_unless_asked(client, cast, workspace):
    make_run(workspace, cast["carol"], experiment="mnist")
    make_run(workspace, cast["carol"], experiment="old")
    Experiment.objects.get(name="old").set_archived(True)
    assert names(get(client, cast["bob"])) == ["mnist"]
    response = get(client, cast["bob"], query={"archived": "true"})
    assert names(response) == ["mnist", "old"]
    assert [item["archived"] for item in response.json()["items"]] == [False, True]


def test_it_pages_by_name_and_the_next_query_string_reads_the_next_page(client, cast, workspace):
    for index in range(5):
        make_run(workspace, cast["carol"], experiment=f"exp-{index}")
    first = get(client, cast["bob"], query={"limit": 2})
    assert names(first) == ["exp-0", "exp-1"]
    assert parse_qs(first.json()["next"]) == {"after": ["exp-1"], "limit": ["2"]}
    second = get(client, cast["bob"], f"{URL}?{first.json()['next']}")
    assert names(second) == ["exp-2", "exp-3"]
    third = get(client, cast["bob"], f"{URL}?{second.json()['next']}")
    assert names(third) == ["exp-4"] and third.json()["next"] is None


def test_the_next_query_string_keeps_the_archived_filter(client, cast, workspace):
    for index in range(3):
        make_run(workspace, cast["carol"], experiment=f"exp-{index}")
        Experiment.objects.get(name=f"exp-{index}").set_archived(True)
    first = get(client, cast["bob"], query={"archived": "true", "limit": 2})
    assert names(first) == ["exp-0", "exp-1"]
    assert parse_qs(first.json()["next"])["archived"] == ["true"]
    assert names(get(client, cast["bob"], f"{URL}?{first.json()['next']}")) == ["exp-2"]


def test_a_page_exactly_full_has_no_next_page(client, cast, workspace):
    for index in range(2):
        make_run(workspace, cast["carol"], experiment=f"exp-{index}")
    assert get(client, cast["bob"], query={"limit": 2}).json()["next"] is None


@pytest.mark.parametrize("limit", ["0", "501", "-1"])
def test_a_limit_out_of_range_is_a_400_saying_the_range(client, cast, workspace, limit):
    response = get(client, cast["bob"], query={"limit": limit})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"error": "limit is a number from 1 to 500."}


def test_a_limit_that_is_not_a_number_is_a_400_naming_the_field(client, cast, workspace):
    response = get(client, cast["bob"], query={"limit": "many"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"].startswith("Invalid input: limit:") and "limit" in body["errors"]


def test_an_archived_flag_that_is_not_a_boolean_is_a_400(client, cast, workspace):
    response = get(client, cast["bob"], query={"archived": "perhaps"})
    assert response.status_code == 400 and "archived" in response.json()["errors"]


def test_it_gets_one_experiment_with_its_counts(client, cast, workspace):
    run = make_run(workspace, cast["carol"], experiment="mnist")
    run.transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED,))
    run.create_child()
    response = get(client, cast["bob"], f"{URL}/mnist")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "mnist" and body["runs"] == 1 and body["all_runs"] == 2
    assert body["latest_status"] == "Running"  # the child is the newest run, and it is Running
    assert body["url"] == "/w/lab/experiments/mnist/"


def test_an_experiment_that_does_not_exist_is_a_404_naming_it(client, cast, workspace):
    response = get(client, cast["bob"], f"{URL}/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "No experiment named 'nope' in this workspace."}


def test_archiving_hides_the_experiment_from_the_default_list(client, cast, workspace):
    make_run(workspace, cast["carol"], experiment="mnist")
    make_run(workspace, cast["carol"], experiment="old")
    response = archive(client, cast["carol"], "old")
    assert response.status_code == 200
    assert response.json()["name"] == "old" and response.json()["archived"] is True
    assert response.json()["runs"] == 1
    assert Experiment.objects.get(name="old").archived
    assert names(get(client, cast["bob"])) == ["mnist"]
    assert get(client, cast["bob"], f"{URL}/old").json()["archived"] is True


def test_unarchiving_shows_it_again(client, cast, workspace):
    make_run(workspace, cast["carol"], experiment="old")
    Experiment.objects.get(name="old").set_archived(True)
    response = archive(client, cast["alice"], "old", archived=False)
    assert response.status_code == 200 and response.json()["archived"] is False
    assert names(get(client, cast["bob"])) == ["old"]


def test_archiving_keeps_every_run(client, cast, workspace):
    make_run(workspace, cast["carol"], experiment="old")
    archive(client, cast["carol"], "old")
    assert Experiment.objects.get(name="old").runs.count() == 1


def test_archiving_needs_the_archived_flag(client, cast, workspace):
    make_run(workspace, cast["carol"], experiment="old")
    response = client.post(f"{URL}/old/archive", "{}", content_type="application/json", headers=token_for(cast["carol"]))
    assert response.status_code == 400
    assert response.json()["errors"] == {"archived": ["Field required"]}
    assert not Experiment.objects.get(name="old").archived


def test_a_reader_cannot_archive(client, cast, workspace):
    make_run(workspace, cast["carol"], experiment="old")
    response = archive(client, cast["bob"], "old")
    assert response.status_code == 403
    assert response.json() == {"error": "Readers cannot change anything in this workspace."}
    assert not Experiment.objects.get(name="old").archived


def test_archiving_an_experiment_that_does_not_exist_is_a_404(client, cast, workspace):
    response = archive(client, cast["carol"], "nope")
    assert response.status_code == 404 and response.json()["error"] == "No experiment named 'nope' in this workspace."
