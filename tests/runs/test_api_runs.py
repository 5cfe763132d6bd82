"""Runs through the REST API, as a script or a CLI uses them: the workspace's run list, an experiment's runs (filtered,
sorted and paged as its page does), one run, cancel, child runs, tags, the console log, metrics and their chart
data, stored files and the snapshot."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from urllib.parse import parse_qs

import pytest

from runs import metrics, snapshots, storage
from runs.models import MetricKind, Run, RunStatus
from runs.submission import submit_run
from studio.models import ApiToken
from tests.conftest import make_run, zip_upload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]

API = "/api/v1/workspaces/lab"
BIDI = "\u202e"


def token_for(user) -> dict:
    return {"Authorization": f"Token {ApiToken.issue(user, 'tests')[1]}"}


def get(client, user, path, query=None):
    return client.get(f"{API}{path}", query or {}, headers=token_for(user))


def patch_tags(client, user, run, tags):
    return client.patch(f"{API}/runs/{run.pk}/tags", json.dumps({"tags": tags}), content_type="application/json",
                        headers=token_for(user))


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content[:300]
    return [item["id"] for item in response.json()["items"]]


def add_run(template: Run, **fields) -> Run:
    """A cheap top-level run sharing the template's snapshot and experiment."""
    defaults = {"workspace": template.workspace, "experiment": template.experiment, "snapshot": template.snapshot,
                "entry_script": "train.py", "compute_target": template.compute_target, "status": RunStatus.COMPLETED,
                "created_by": template.created_by}
    return Run.objects.create(**{**defaults, **fields})


def start(run: Run) -> Run:
    for status, before in ((RunStatus.PREPARING, RunStatus.QUEUED), (RunStatus.STARTING, RunStatus.PREPARING),
                           (RunStatus.RUNNING, RunStatus.STARTING)):
        assert run.transition(status, from_states=(before,))
    return run


@pytest.fixture
def run(cast, workspace) -> Run:
    return make_run(workspace, cast["carol"], experiment="mnist", display_name="first", arguments=["--epochs", "3"],
                    tags={"team": "vision"})


# The workspace's runs -------------------------------------------------------------------------------------------------


def test_it_lists_every_run_of_the_workspace_newest_first_children_included(client, cast, workspace, run):
    other = make_run(workspace, cast["carol"], experiment="cifar")
    start(run)
    child = run.create_child("fold-1")
    response = get(client, cast["bob"], "/runs")
    assert ids(response) == [child.pk, other.pk, run.pk]
    assert response.json()["next"] is None
    by_id = {item["id"]: item for item in response.json()["items"]}
    assert by_id[child.pk]["parent"] == run.pk and by_id[run.pk]["child_count"] == 1
    assert by_id[run.pk]["experiment"] == "mnist" and by_id[other.pk]["experiment"] == "cifar"
    assert by_id[run.pk]["metrics"] is None  # metric columns belong to an experiment's list


def test_it_shows_each_run_as_submitted(client, cast, run):
    (item,) = get(client, cast["bob"], "/runs").json()["items"]
    assert item["display_name"] == "first" and item["status"] == "Queued"
    assert item["arguments"] == ["--epochs", "3"] and item["tags"] == {"team": "vision"}
    assert item["created_by"] == "carol" and item["compute_target"] == "local" and item["entry_script"] == "train.py"
    assert item["url"] == f"/w/lab/runs/{run.pk}/" and item["environment"] is None
    assert item["started_at"] is None and item["duration_seconds"] is None


def test_it_does_not_list_runs_of_another_workspace(client, cast, workspace, run):
    make_run(workspace.__class__.objects.get(name="elsewhere"), cast["charlie"])
    assert ids(get(client, cast["bob"], "/runs")) == [run.pk]


def test_the_run_list_pages_with_before_and_the_next_query_string(client, cast, run):
    more = [add_run(run) for _ in range(4)]
    newest_first = [r.pk for r in reversed([run, *more])]
    first = get(client, cast["bob"], "/runs", {"limit": 2})
    assert ids(first) == newest_first[:2]
    assert parse_qs(first.json()["next"]) == {"before": [str(newest_first[1])], "limit": ["2"]}
    second = get(client, cast["bob"], f"/runs?{first.json()['next']}")
    assert ids(second) == newest_first[2:4]
    third = get(client, cast["bob"], f"/runs?{second.json()['next']}")
    assert ids(third) == newest_first[4:] and third.json()["next"] is None


def test_the_run_list_filters_by_status_and_keeps_it_when_paging(client, cast, run):
    done = [add_run(run) for _ in range(3)]
    add_run(run, status=RunStatus.FAILED)
    first = get(client, cast["bob"], "/runs", {"status": "Completed", "limit": 2})
    assert ids(first) == [done[2].pk, done[1].pk]
    assert parse_qs(first.json()["next"])["status"] == ["Completed"]
    assert ids(get(client, cast["bob"], f"/runs?{first.json()['next']}")) == [done[0].pk]
    assert ids(get(client, cast["bob"], "/runs", {"status": "Queued"})) == [run.pk]


def test_a_status_that_does_not_exist_is_a_400_listing_the_statuses(client, cast, run):
    response = get(client, cast["bob"], "/runs", {"status": "Done"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("status must be one of NotStarted, Queued, Preparing")


@pytest.mark.parametrize("limit", ["0", "501"])
def test_a_run_list_limit_out_of_range_is_a_400(client, cast, run, limit):
    response = get(client, cast["bob"], "/runs", {"limit": limit})
    assert response.status_code == 400 and response.json() == {"error": "limit is a number from 1 to 500."}


@pytest.mark.parametrize("before", ["0", "abc", str(2**63)])
def test_a_before_that_is_not_a_run_id_is_a_400(client, cast, run, before):
    response = get(client, cast["bob"], "/runs", {"before": before})
    assert response.status_code == 400 and "before" in response.json()["errors"]


# An experiment's runs -------------------------------------------------------------------------------------------------


def log(run: Run, **values) -> None:
    for name, value in values.items():
        metrics.append_points(run, name, [(None, value, 1.7e9)])


def test_an_experiments_list_has_only_its_top_level_runs_with_the_last_metric_values(client, cast, workspace, run):
    start(run)
    run.create_child("fold-1")
    log(run, loss=0.5, accuracy=0.75)
    metrics.append_points(run, "loss", [(None, 0.25, 1.7e9)])
    log(run, **{"sys/cpu_percent": 40.0})
    other = add_run(run)
    make_run(workspace, cast["carol"], experiment="cifar")
    response = get(client, cast["bob"], "/experiments/mnist/runs")
    assert ids(response) == [other.pk, run.pk]
    items = {item["id"]: item for item in response.json()["items"]}
    assert items[run.pk]["metrics"] == {"accuracy": 0.75, "loss": 0.25}  # sys/ series are not default columns
    assert items[other.pk]["metrics"] == {"accuracy": None, "loss": None}
    assert items[run.pk]["child_count"] == 1
    assert response.json()["next"] is None and response.json()["previous"] is None


def test_the_metric_columns_can_be_chosen_and_show_a_non_finite_last_value_as_text(client, cast, run):
    log(run, loss=0.5, accuracy=0.75, **{"sys/cpu_percent": 40.0})
    metrics.append_points(run, "loss", [(None, float("nan"), 1.7e9)])
    log(add_run(run), loss=0.5)  # a name is a column once some run has a finite last value of it
    response = get(client, cast["bob"], "/experiments/mnist/runs", {"metric": ["loss", "sys/cpu_percent"]})
    assert response.json()["items"][1]["metrics"] == {"loss": "NaN", "sys/cpu_percent": 40.0}


def test_an_experiments_runs_filter_by_status(client, cast, run):
    failed = add_run(run, status=RunStatus.FAILED)
    add_run(run)
    assert ids(get(client, cast["bob"], "/experiments/mnist/runs", {"status": "Failed"})) == [failed.pk]
    assert ids(get(client, cast["bob"], "/experiments/mnist/runs", {"status": "Queued"})) == [run.pk]


def test_an_experiments_runs_filter_by_tag_key_or_key_and_value(client, cast, run):
    cnn = add_run(run, tags={"model": "cnn"})
    mlp = add_run(run, tags={"model": "mlp"})
    add_run(run, tags={})
    assert ids(get(client, cast["bob"], "/experiments/mnist/runs", {"tag": "model"})) == [mlp.pk, cnn.pk]
    assert ids(get(client, cast["bob"], "/experiments/mnist/runs", {"tag": "model:cnn"})) == [cnn.pk]
    both = get(client, cast["bob"], "/experiments/mnist/runs", {"tag": ["model", "team:vision"]})
    assert ids(both) == []


def test_an_experiments_runs_filter_by_a_metric_range(client, cast, run):
    low, mid, high = add_run(run), add_run(run), add_run(run)
    log(low, loss=0.1)
    log(mid, loss=0.5)
    log(high, loss=0.9)
    assert ids(get(client, cast["bob"], "/experiments/mnist/runs", {"range": "loss:0.2:0.9"})) == [high.pk, mid.pk]
    assert ids(get(client, cast["bob"], "/experiments/mnist/runs", {"range": "loss::0.5"})) == [mid.pk, low.pk]


def test_an_experiments_runs_sort_by_a_metric_with_runs_lacking_it_last(client, cast, run):
    low, high, mid = add_run(run), add_run(run), add_run(run)
    log(low, loss=0.1)
    log(high, loss=0.9)
    log(mid, loss=0.5)
    ascending = get(client, cast["bob"], "/experiments/mnist/runs", {"sort": "metric:loss"})
    assert ids(ascending) == [low.pk, mid.pk, high.pk, run.pk]
    descending = get(client, cast["bob"], "/experiments/mnist/runs", {"sort": "-metric:loss"})
    assert ids(descending) == [high.pk, mid.pk, low.pk, run.pk]
    assert [item["metrics"]["loss"] for item in descending.json()["items"]] == [0.9, 0.5, 0.1, None]


@pytest.mark.parametrize(("query", "message"), [
    ({"status": "Done"}, "status: Select a valid choice. Done is not one of the available choices."),
    ({"sort": "colour"}, "Cannot sort by 'colour'"),
    ({"sort": "metric:nope"}, "No scalar metric named 'nope' in this experiment"),
    ({"range": "loss:1:0"}, "the low bound is above the high bound"),
    ({"tag": "bad key!"}, "Tag filter 'bad key!'"),
    ({"before": "5", "after": "3"}, "Give one of before and after, not both"),
])
def test_a_bad_experiment_runs_query_is_a_400_saying_what_to_fix(client, cast, run, query, message):
    log(run, loss=0.5)
    response = get(client, cast["bob"], "/experiments/mnist/runs", query)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert message in response.json()["error"]


def test_a_page_cursor_of_another_experiment_is_a_400(client, cast, workspace, run):
    other = make_run(workspace, cast["carol"], experiment="cifar")
    log(other, loss=1.0)
    log(run, loss=0.5)
    response = get(client, cast["bob"], "/experiments/mnist/runs", {"sort": "metric:loss", "below": other.pk})
    assert response.status_code == 400
    assert response.json()["error"] == f"No run {other.pk} in experiment mnist: follow the page links instead."


def test_the_runs_of_an_experiment_that_does_not_exist_are_a_404(client, cast, run):
    response = get(client, cast["bob"], "/experiments/nope/runs")
    assert response.status_code == 404
    assert response.json() == {"error": "No experiment named 'nope' in this workspace."}


@pytest.fixture
def many(run) -> list[Run]:
    """120 top-level runs of mnist (the first one included); 100 of them log a loss, several sharing a value."""
    runs = [run, *(add_run(run, display_name=f"run-{index}") for index in range(119))]
    for index, each in enumerate(runs[:100]):
        log(each, loss=(index % 37) / 10)
    return runs


def walk(client, user, query: dict, direction: str) -> list[list[int]]:
    """The ids of each page, from the page `query` asks for on, following `direction` (next or previous)."""
    response = get(client, user, "/experiments/mnist/runs", query)
    pages = [ids(response)]
    while (following := response.json()[direction]) is not None:
        response = get(client, user, f"/experiments/mnist/runs?{following}")
        pages.append(ids(response))
        assert len(pages) < 10, "the pages never end"
    return pages


def test_next_and_previous_walk_120_runs_newest_first_without_gaps_or_repeats(client, cast, many):
    newest_first = sorted((r.pk for r in many), reverse=True)
    pages = walk(client, cast["bob"], {}, "next")
    assert [run_id for page in pages for run_id in page] == newest_first
    assert [len(page) for page in pages] == [50, 50, 20]
    last = get(client, cast["bob"], "/experiments/mnist/runs", {"before": newest_first[99]})
    assert ids(last) == newest_first[100:] and last.json()["next"] is None
    back = last.json()["previous"]
    assert parse_qs(back) == {"after": [str(newest_first[100])]}
    upwards = walk(client, cast["bob"], {"before": newest_first[99]}, "previous")
    assert [run_id for page in reversed(upwards) for run_id in page] == newest_first
    middle = get(client, cast["bob"], f"/experiments/mnist/runs?{back}")
    assert ids(middle) == newest_first[50:100]
    top = get(client, cast["bob"], f"/experiments/mnist/runs?{middle.json()['previous']}")
    assert ids(top) == newest_first[:50] and top.json()["previous"] is None


def test_next_and_previous_walk_120_runs_sorted_by_a_metric_without_gaps_or_repeats(client, cast, many):
    loss = {r.pk: r.metric_series.get(name="loss").last_value for r in many[:100]}
    expected = sorted(loss, key=lambda run_id: (loss[run_id], run_id))  # ties by id, the same direction
    expected += sorted((r.pk for r in many[100:]), reverse=True)  # runs without a loss last, newest first
    query = {"sort": "metric:loss", "status": "Completed"}
    completed = [run_id for run_id in expected if run_id != many[0].pk]  # the first run is still Queued
    response = get(client, cast["bob"], "/experiments/mnist/runs", query)
    seen = ids(response)
    pages = [response]
    while response.json()["next"]:
        following = parse_qs(response.json()["next"])
        assert following["sort"] == ["metric:loss"] and following["status"] == ["Completed"] and "below" in following
        response = get(client, cast["bob"], f"/experiments/mnist/runs?{response.json()['next']}")
        seen += ids(response)
        pages.append(response)
    assert seen == completed and len(pages) == 3
    backwards = []
    response = pages[-1]
    while response.json()["previous"]:
        response = get(client, cast["bob"], f"/experiments/mnist/runs?{response.json()['previous']}")
        backwards = ids(response) + backwards
    assert backwards + ids(pages[-1]) == completed


# One run ----------------------------------------------------------------------------------------------------------


def test_it_gets_one_run_with_its_status_history_and_snapshot(client, cast, run):
    start(run)
    response = get(client, cast["bob"], f"/runs/{run.pk}")
    assert response.status_code == 200
    detail = response.json()
    assert detail["id"] == run.pk and detail["status"] == "Running" and detail["started_at"]
    assert [change["status"] for change in detail["status_history"]] == ["Queued", "Preparing", "Starting", "Running"]
    assert all(change["at"] for change in detail["status_history"])
    assert detail["snapshot"] == {"source_name": "train.py", "file_count": 1, "total_bytes": len("print('hi')\n")}
    assert detail["child_count"] == 0 and detail["duration_seconds"] >= 0


def test_a_run_that_does_not_exist_is_a_404_naming_it(client, cast, run):
    response = get(client, cast["bob"], f"/runs/{run.pk + 1000}")
    assert response.status_code == 404
    assert response.json() == {"error": f"No run {run.pk + 1000} in this workspace."}


# Cancel -----------------------------------------------------------------------------------------------------------


def cancel(client, user, run):
    return client.post(f"{API}/runs/{run.pk}/cancel", headers=token_for(user))


def test_canceling_a_queued_run_ends_it_at_once(client, cast, run):
    response = cancel(client, cast["carol"], run)
    assert response.status_code == 200
    assert response.json() == {"status": "Canceled", "cancel_requested": True, "message": "The run is canceled."}
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELED and run.reason == "Canceled by carol." and run.ended_at
    history = get(client, cast["bob"], f"/runs/{run.pk}").json()["status_history"]
    assert [change["status"] for change in history] == ["Queued", "Canceled"]


def test_canceling_a_running_run_asks_its_worker_to_stop_it(client, cast, run):
    start(run)
    response = cancel(client, cast["alice"], run)
    assert response.json() == {"status": "Running", "cancel_requested": True,
                               "message": "Cancel requested: the run is being stopped."}
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.cancel_requested_at is not None


def test_canceling_an_ended_run_changes_nothing_and_says_so(client, cast, run):
    start(run)
    run.end_with_descendants(RunStatus.COMPLETED)
    response = cancel(client, cast["carol"], run)
    assert response.status_code == 200
    assert response.json() == {"status": "Completed", "cancel_requested": False,
                               "message": "The run already ended (Completed)."}
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED and run.cancel_requested_at is None


def test_a_reader_cannot_cancel(client, cast, run):
    response = cancel(client, cast["bob"], run)
    assert response.status_code == 403 and response.json() == {"error": "Readers cannot change anything in this workspace."}
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED


# Children ---------------------------------------------------------------------------------------------------------


def test_it_lists_a_runs_children_oldest_first(client, cast, run):
    start(run)
    first, second = run.create_child("fold-1"), run.create_child("fold-2")
    grandchild = first.create_child("inner")
    response = get(client, cast["bob"], f"/runs/{run.pk}/children")
    assert ids(response) == [first.pk, second.pk]
    items = response.json()["items"]
    assert [item["display_name"] for item in items] == ["fold-1", "fold-2"]
    assert items[0]["child_count"] == 1 and items[0]["parent"] == run.pk
    assert ids(get(client, cast["bob"], f"/runs/{first.pk}/children")) == [grandchild.pk]
    assert ids(get(client, cast["bob"], f"/runs/{second.pk}/children")) == []


# Tags ---------------------------------------------------------------------------------------------------------------


def test_it_reads_a_runs_tags(client, cast, run):
    response = get(client, cast["bob"], f"/runs/{run.pk}/tags")
    assert response.status_code == 200 and response.json() == {"tags": {"team": "vision"}}


def test_patching_tags_adds_changes_and_removes_with_null(client, cast, run):
    response = patch_tags(client, cast["carol"], run, {"model": "cnn", "lr": 0.01, "epochs": 3, "team": None})
    assert response.status_code == 200
    assert response.json() == {"tags": {"model": "cnn", "lr": "0.01", "epochs": "3"}}
    run.refresh_from_db()
    assert run.tags == {"model": "cnn", "lr": "0.01", "epochs": "3"}
    assert patch_tags(client, cast["carol"], run, {"model": "mlp", "missing": None}).json()["tags"]["model"] == "mlp"


def test_more_than_50_tags_in_one_request_is_a_400(client, cast, run):
    response = patch_tags(client, cast["carol"], run, {f"k{index}": "v" for index in range(51)})
    assert response.status_code == 400 and "tags" in response.json()["errors"]
    run.refresh_from_db()
    assert run.tags == {"team": "vision"}


def test_a_run_holds_at_most_50_tags(client, cast, run):
    assert patch_tags(client, cast["carol"], run, {f"k{index}": "v" for index in range(49)}).status_code == 200
    response = patch_tags(client, cast["carol"], run, {"one": "too", "many": "now"})
    assert response.status_code == 400 and response.json() == {"error": "A run holds at most 50 tags."}
    run.refresh_from_db()
    assert len(run.tags) == 50 and "one" not in run.tags


def test_a_bad_tag_key_is_a_400_with_the_rule(client, cast, run):
    response = patch_tags(client, cast["carol"], run, {"bad key!": "x"})
    assert response.status_code == 400
    assert "tag keys are 1-128 letters, digits or _ . : / -" in response.json()["error"]
    run.refresh_from_db()
    assert run.tags == {"team": "vision"}


def test_a_tag_value_with_a_direction_control_character_is_a_400(client, cast, run):
    response = patch_tags(client, cast["carol"], run, {"owner": f"alice{BIDI}txt.exe"})
    assert response.status_code == 400
    assert "U+202E" in response.json()["error"]
    run.refresh_from_db()
    assert run.tags == {"team": "vision"}


@pytest.mark.parametrize("value", [True, [1], {"a": 1}, "x" * 1025])
def test_a_tag_value_that_is_not_text_or_a_number_is_a_400(client, cast, run, value):
    response = patch_tags(client, cast["carol"], run, {"model": value})
    assert response.status_code == 400 and response.json()["error"].startswith("Invalid input:")


def test_a_reader_cannot_change_tags(client, cast, run):
    response = patch_tags(client, cast["bob"], run, {"model": "cnn"})
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.tags == {"team": "vision"}


# The console log ------------------------------------------------------------------------------------------------------


LOG = b"epoch 1\n\x1b[32mgreen\x1b[0m <b>bold</b>\npartial"


def write_log(run: Run, data: bytes = LOG):
    path = storage.console_log_path(run.pk)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_the_log_from_an_offset_is_json_lines_and_the_next_offset(client, cast, run):
    start(run)
    write_log(run)
    response = get(client, cast["bob"], f"/runs/{run.pk}/log", {"offset": 0})
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    complete = len(b"epoch 1\n\x1b[32mgreen\x1b[0m <b>bold</b>\n")
    assert response.json() == {"lines": ["epoch 1", "green <b>bold</b>"], "next_offset": complete,
                               "status": "Running", "final": False}
    following = get(client, cast["bob"], f"/runs/{run.pk}/log", {"offset": complete}).json()
    assert following["lines"] == [] and following["next_offset"] == complete  # the partial line waits for its end
    write_log(run, LOG + b" line\n")
    assert get(client, cast["bob"], f"/runs/{run.pk}/log", {"offset": complete}).json()["lines"] == ["partial line"]


def test_the_log_of_an_ended_run_says_it_is_final(client, cast, run):
    start(run)
    run.end_with_descendants(RunStatus.FAILED, "boom")
    write_log(run, b"Traceback\n")
    chunk = get(client, cast["bob"], f"/runs/{run.pk}/log", {"offset": 0}).json()
    assert chunk == {"lines": ["Traceback"], "next_offset": 10, "status": "Failed", "final": True}


def test_the_log_without_an_offset_is_the_whole_text(client, cast, run):
    write_log(run)
    response = get(client, cast["bob"], f"/runs/{run.pk}/log")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert body(response) == LOG


def test_the_log_is_offered_as_a_download(client, cast, run):
    write_log(run)
    response = get(client, cast["bob"], f"/runs/{run.pk}/log", {"download": "1"})
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.pk}-std_log.txt"'


def test_a_run_without_a_log_yet_has_an_empty_one(client, cast, run):
    assert body(get(client, cast["bob"], f"/runs/{run.pk}/log")) == b""
    assert get(client, cast["bob"], f"/runs/{run.pk}/log", {"offset": 0}).json()["lines"] == []


@pytest.mark.parametrize("offset", ["-1", "abc", "1.5", str(2**63)])
def test_an_invalid_log_offset_is_a_400(client, cast, run, offset):
    write_log(run)
    response = get(client, cast["bob"], f"/runs/{run.pk}/log", {"offset": offset})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json") and "offset" in response.json()["error"]


# Metrics ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def logged(run) -> Run:
    start(run)
    t0 = run.started_at.timestamp()
    metrics.append_points(run, "loss", [(0, 0.9, t0 + 1.0), (1, 0.5, t0 + 2.0), (5, 0.25, t0 + 3.5)], "training loss")
    metrics.append_points(run, "sys/cpu_percent", [(None, 12.5, t0 + 1.0), (None, 50.0, t0 + 6.0)])
    metrics.append_entries(run, "per_class", MetricKind.ROW, [{"digit": 3, "accuracy": 0.97}])
    return run


def test_it_lists_every_series_with_the_scalars_summaries(client, cast, logged):
    response = get(client, cast["bob"], f"/runs/{logged.pk}/metrics")
    assert response.status_code == 200
    series = {item["name"]: item for item in response.json()}
    assert list(series) == ["loss", "per_class", "sys/cpu_percent"]
    loss = series["loss"]
    assert loss["kind"] == "scalar" and loss["description"] == "training loss"
    assert (loss["count"], loss["last"], loss["min"], loss["max"]) == (3, 0.25, 0.25, 0.9)
    assert loss["data_url"] == f"{API}/runs/{logged.pk}/metrics/{loss['id']}"
    cpu = series["sys/cpu_percent"]
    assert (cpu["count"], cpu["last"], cpu["min"], cpu["max"]) == (2, 50.0, 12.5, 50.0) and cpu["data_url"]
    rows = series["per_class"]
    assert rows["kind"] == "row" and rows["count"] == 1 and rows["last"] is None and rows["data_url"] is None


def test_a_non_finite_last_value_is_listed_as_text(client, cast, logged):
    metrics.append_points(logged, "loss", [(None, float("inf"), 1.7e9)])
    (loss,) = [item for item in get(client, cast["bob"], f"/runs/{logged.pk}/metrics").json() if item["name"] == "loss"]
    assert loss["last"] == "Infinity" and loss["count"] == 4


def test_series_data_follows_the_data_url(client, cast, logged):
    listed = {item["name"]: item for item in get(client, cast["bob"], f"/runs/{logged.pk}/metrics").json()}
    response = client.get(listed["loss"]["data_url"], headers=token_for(cast["bob"]))
    assert response.status_code == 200
    assert response.json() == {"name": "loss", "count": 3, "shown": 3, "x": [0, 1, 5], "y": [0.9, 0.5, 0.25],
                               "nonfinite": [], "last": 0.25, "min": 0.25, "max": 0.9, "final": False}


def test_series_data_is_drawn_against_relative_or_wall_clock_time(client, cast, logged):
    loss = logged.metric_series.get(name="loss")
    url = f"/runs/{logged.pk}/metrics/{loss.pk}"
    assert get(client, cast["bob"], url, {"x": "relative"}).json()["x"] == [1.0, 2.0, 3.5]
    t0 = logged.started_at.timestamp()
    wall = get(client, cast["bob"], url, {"x": "time"}).json()["x"]
    assert wall == pytest.approx([(t0 + 1.0) * 1000, (t0 + 2.0) * 1000, (t0 + 3.5) * 1000])


def test_series_data_is_downsampled_keeping_the_extremes(client, cast, logged):
    values = [float(i % 100) for i in range(10_000)]
    values[4321] = 1000.0
    metrics.append_points(logged, "long", [(None, value, 1.7e9) for value in values])
    series = logged.metric_series.get(name="long")
    data = get(client, cast["bob"], f"/runs/{logged.pk}/metrics/{series.pk}", {"max_points": 100}).json()
    assert data["count"] == 10_000 and data["shown"] == len(data["y"]) <= 110
    assert 1000.0 in data["y"] and data["x"][0] == 0 and data["x"][-1] == 9_999
    assert data["max"] == 1000.0


def test_non_finite_values_are_null_and_listed_as_markers(client, cast, logged):
    metrics.append_points(logged, "loss", [(6, float("nan"), 1.7e9)])
    series = logged.metric_series.get(name="loss")
    data = get(client, cast["bob"], f"/runs/{logged.pk}/metrics/{series.pk}").json()
    assert data["y"][-1] is None and data["nonfinite"] == [{"x": 6, "value": "NaN"}] and data["last"] == "NaN"


@pytest.mark.parametrize(("query", "field"), [
    ({"max_points": "99"}, "max_points"), ({"max_points": "5001"}, "max_points"), ({"max_points": "lots"}, "max_points"),
    ({"x": "epoch"}, "x"),
])
def test_bad_series_data_queries_are_a_400(client, cast, logged, query, field):
    series = logged.metric_series.get(name="loss")
    response = get(client, cast["bob"], f"/runs/{logged.pk}/metrics/{series.pk}", query)
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{field}:") or field in response.json().get("errors", {})


def test_a_series_that_is_not_a_scalar_has_no_data(client, cast, logged):
    rows = logged.metric_series.get(name="per_class")
    response = get(client, cast["bob"], f"/runs/{logged.pk}/metrics/{rows.pk}")
    assert response.status_code == 404
    assert response.json() == {"error": f"No scalar series {rows.pk} in run {logged.pk}."}


def test_a_series_of_another_run_is_a_404(client, cast, logged):
    other = add_run(logged)
    series = logged.metric_series.get(name="loss")
    response = get(client, cast["bob"], f"/runs/{other.pk}/metrics/{series.pk}")
    assert response.status_code == 404 and response.json()["error"] == f"No scalar series {series.pk} in run {other.pk}."


# Stored files -------------------------------------------------------------------------------------------------------


@pytest.fixture
def outputs(run) -> dict[str, bytes]:
    files = {"logs/std_log.txt": b"hello\n", "outputs/model.pkl": b"weights" * 100, "outputs/plots/loss.csv": b"0,1\n"}
    for relative, data in files.items():
        path = storage.run_dir(run.pk) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_it_lists_the_stored_files_with_their_download_urls(client, cast, run, outputs):
    response = get(client, cast["bob"], f"/runs/{run.pk}/files")
    assert response.status_code == 200
    assert sorted(response.json(), key=lambda item: item["path"]) == [
        {"path": path, "size": len(data), "url": f"{API}/runs/{run.pk}/files/{path}"} for path, data in outputs.items()
    ]


def test_a_run_without_files_lists_none(client, cast, run):
    assert get(client, cast["bob"], f"/runs/{run.pk}/files").json() == []


def test_a_stored_file_downloads_as_it_was_stored(client, cast, run, outputs):
    response = get(client, cast["bob"], f"/runs/{run.pk}/files/outputs/model.pkl")
    assert response.status_code == 200 and body(response) == outputs["outputs/model.pkl"]
    assert response["Content-Disposition"] == 'attachment; filename="model.pkl"'
    listed = {item["path"]: item for item in get(client, cast["bob"], f"/runs/{run.pk}/files").json()}
    nested = client.get(listed["outputs/plots/loss.csv"]["url"], headers=token_for(cast["bob"]))
    assert body(nested) == b"0,1\n"


def test_every_stored_file_comes_back_in_the_zip(client, cast, run, outputs):
    response = get(client, cast["bob"], f"/runs/{run.pk}/files.zip")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.pk}-files.zip"'
    with zipfile.ZipFile(io.BytesIO(body(response))) as archive:
        assert archive.testzip() is None
        assert {name: archive.read(name) for name in archive.namelist()} == outputs


@pytest.mark.parametrize("path", ["outputs/missing.txt", "outputs", "outputs/../outputs/../../secret.txt",
                                  "../secret.txt", "logs/../../other/outputs/x.txt", "workdir/x.txt"])
def test_a_file_that_is_not_stored_or_escapes_the_run_is_a_404(client, cast, run, outputs, path):
    secret = storage.run_dir(run.pk).parent / "secret.txt"
    secret.write_bytes(b"not yours")
    other = storage.run_dir(run.pk).parent / "other/outputs/x.txt"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"not yours")
    response = get(client, cast["bob"], f"/runs/{run.pk}/files/{path}")
    assert response.status_code == 404
    assert response.json() == {"error": "No such file in this run."}


def test_a_file_of_another_run_cannot_be_reached_through_this_one(client, cast, run, outputs):
    other = add_run(run)
    response = get(client, cast["bob"], f"/runs/{other.pk}/files/../{run.pk}/outputs/model.pkl")
    assert response.status_code == 404 and response.json() == {"error": "No such file in this run."}


# The snapshot -------------------------------------------------------------------------------------------------------


SOURCE = {"train.py": "print('train')\n", "lib/util.py": "X = 1\n", "data/labels.txt": "cat\ndog\n"}


@pytest.fixture
def zipped(cast, workspace) -> Run:
    staged = snapshots.stage_upload(zip_upload(SOURCE))
    created = submit_run(workspace, cast["carol"], experiment_name="mnist", staged=staged, entry_script="train.py",
                         compute_target=workspace.compute_targets.get(name="local"))
    return Run.objects.get(pk=created.pk)


def test_the_snapshot_lists_every_file_with_its_size_and_hash(client, cast, zipped):
    response = get(client, cast["bob"], f"/runs/{zipped.pk}/snapshot")
    assert response.status_code == 200
    snapshot = response.json()
    assert snapshot["source_name"] == "src.zip" and snapshot["file_count"] == 3
    assert snapshot["total_bytes"] == sum(len(text) for text in SOURCE.values())
    assert snapshot["files"] == [
        {"path": path, "size": len(SOURCE[path]), "sha256": hashlib.sha256(SOURCE[path].encode()).hexdigest()}
        for path in sorted(SOURCE)
    ]
    assert snapshot["ignore_file"] == "" and snapshot["ignored_count"] == 0


def test_a_snapshot_file_downloads_as_submitted(client, cast, zipped):
    response = get(client, cast["bob"], f"/runs/{zipped.pk}/snapshot/file", {"path": "lib/util.py"})
    assert response.status_code == 200 and body(response) == b"X = 1\n"
    assert response["Content-Disposition"] == 'attachment; filename="util.py"'


@pytest.mark.parametrize("path", ["nope.py", "../train.py", "lib/../train.py", "/train.py", "lib"])
def test_a_path_that_is_not_a_file_of_the_snapshot_is_a_404(client, cast, zipped, path):
    response = get(client, cast["bob"], f"/runs/{zipped.pk}/snapshot/file", {"path": path})
    assert response.status_code == 404
    assert response.json() == {"error": f"No file {path!r} in the snapshot."}


def test_a_snapshot_file_needs_a_path(client, cast, zipped):
    response = get(client, cast["bob"], f"/runs/{zipped.pk}/snapshot/file")
    assert response.status_code == 400
    assert response.json() == {"error": "Invalid input: path: Field required", "errors": {"path": ["Field required"]}}


def test_the_snapshot_zip_holds_the_source_as_submitted(client, cast, zipped):
    response = get(client, cast["bob"], f"/runs/{zipped.pk}/snapshot.zip")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == f'attachment; filename="run-{zipped.pk}-snapshot.zip"'
    with zipfile.ZipFile(io.BytesIO(body(response))) as archive:
        assert {name: archive.read(name).decode() for name in archive.namelist()} == SOURCE


def test_the_same_file_submitted_again_has_the_same_hash(client, cast, workspace, zipped):
    again = make_run(workspace, cast["carol"], source="print('train')\n", experiment="mnist")
    snapshot = get(client, cast["bob"], f"/runs/{again.pk}/snapshot").json()
    assert snapshot["files"][0]["sha256"] == get(client, cast["bob"], f"/runs/{zipped.pk}/snapshot").json()["files"][-1]["sha256"]
