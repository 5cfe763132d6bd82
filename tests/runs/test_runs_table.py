"""The experiment page's runs table: metric columns, sorting (by a metric too), tag and range filters, child runs
behind an expander, keyset pages in any order, and a bounded number of queries."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from runs.metrics import append_points
from runs.models import MetricKind, MetricSeries, Run, RunStatus
from runs.views import PAGE_SIZE
from tests.conftest import login, make_run, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]

URL = "/w/lab/experiments/mnist/"


@pytest.fixture
def first(cast, workspace) -> Run:
    return make_run(workspace, cast["carol"], experiment="mnist", display_name="first")


def add_run(template: Run, **fields) -> Run:
    """A cheap run sharing the template's snapshot."""
    defaults = {"workspace": template.workspace, "experiment": template.experiment, "snapshot": template.snapshot,
                "entry_script": "train.py", "compute_target": template.compute_target, "status": RunStatus.COMPLETED}
    return Run.objects.create(**{**defaults, **fields})


def log(run: Run, **values) -> None:
    for name, value in values.items():
        append_points(run, name, [(None, value, 0.0)])


def rows(response) -> list[dict]:
    """Each table row: the run id and the text of its metric cells."""
    found = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", response.content.decode(), re.S):
        run_id = re.search(r'<span class="muted">#(\d+)</span>', row)
        if run_id:
            cells = re.findall(r'<td class="num">(.*?)</td>', row, re.S)
            found.append({"id": int(run_id.group(1)),
                          "cells": [html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in cells]})
    return found


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content[:300]
    return [row["id"] for row in rows(response)]


def metric_headers(response) -> list[str]:
    heads = re.findall(r'<th class="num"[^>]*>(.*?)</th>', response.content.decode(), re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", head)).replace("▲", "").replace("▼", "").strip() for head in heads]


def link(response, label: str) -> str | None:
    match = re.search(r'<a href="(\?[^"]*)"[^>]*>' + re.escape(label), response.content.decode())
    return html.unescape(match.group(1)) if match else None


# --- Metric columns -------------------------------------------------------------------------------------------


def test_it_shows_the_first_five_metrics_alphabetically_with_each_runs_last_value(client, cast, first):
    log(first, zeta=1, loss=0.25, accuracy=0.9, epoch=3, lr=0.01, mae=2.5)
    append_points(first, "loss", [(None, 0.125, 1.0)])  # the last value is the one shown
    login(client, cast["bob"])
    response = client.get(URL)
    assert metric_headers(response) == ["accuracy", "epoch", "loss", "lr", "mae"]
    assert rows(response) == [{"id": first.pk, "cells": ["0.9", "3", "0.125", "0.01", "2.5"]}]


def test_system_metrics_are_left_out_by_default_but_can_be_chosen(client, cast, first):
    log(first, **{"sys/cpu_percent": 50.0, "loss": 0.5})
    login(client, cast["alice"])
    assert metric_headers(client.get(URL)) == ["loss"]
    page = text(client.get(URL))
    assert 'value="sys/cpu_percent"' in page and "System metrics" in page
    response = client.get(URL, {"metric": ["sys/cpu_percent", "loss"]})
    assert metric_headers(response) == ["sys/cpu_percent", "loss"]
    assert rows(response)[0]["cells"] == ["50", "0.5"]


def test_the_chosen_columns_are_kept_in_the_query_string_and_can_be_none(client, cast, first):
    log(first, loss=0.5, accuracy=0.75)
    login(client, cast["alice"])
    response = client.get(URL, {"metric": ["loss"]})
    assert metric_headers(response) == ["loss"]
    assert "metric=loss" in link(response, "Status")  # the sort links keep the columns
    assert metric_headers(client.get(URL + "?metric=")) == []


def test_a_run_without_the_metric_shows_a_dash_and_a_non_finite_last_value_shows_as_such(client, cast, first):
    second = add_run(first)
    log(first, loss=0.5)
    append_points(second, "loss", [(None, 1.0, 0.0), (None, float("nan"), 1.0)])
    third = add_run(first)
    login(client, cast["alice"])
    assert [row["cells"] for row in rows(client.get(URL))] == [["–"], ["NaN"], ["0.5"]]
    assert ids(client.get(URL)) == [third.pk, second.pk, first.pk]


def test_list_and_image_series_are_not_metric_columns(client, cast, first):
    log(first, loss=0.5)
    MetricSeries.objects.create(run=first, experiment=first.experiment, name="samples", kind=MetricKind.IMAGE, count=1)
    login(client, cast["alice"])
    assert metric_headers(client.get(URL)) == ["loss"]
    assert client.get(URL, {"metric": "samples"}).status_code == 400


# --- Sorting ----------------------------------------------------------------------------------------------------


@pytest.fixture
def scored(first) -> dict[str, Run]:
    """Runs with losses 0.3, 0.1, 0.2 (ties broken by id), one without a loss, one whose loss ended NaN."""
    runs = {"a": first, "b": add_run(first), "c": add_run(first), "none": add_run(first), "nan": add_run(first)}
    log(runs["a"], loss=0.3)
    log(runs["b"], loss=0.1)
    log(runs["c"], loss=0.2)
    log(runs["nan"], loss=float("nan"))
    log(runs["none"], accuracy=0.5)
    return runs


def test_it_sorts_by_a_metric_ascending_with_runs_lacking_it_last(client, cast, scored):
    login(client, cast["bob"])
    response = client.get(URL, {"sort": "metric:loss"})
    expected = [scored[k].pk for k in ("b", "c", "a")] + sorted([scored["nan"].pk, scored["none"].pk], reverse=True)
    assert ids(response) == expected
    header = re.search(r'<th class="num" aria-sort="ascending"><a href="([^"]+)"', response.content.decode())
    assert "sort=-metric%3Aloss" in html.unescape(header.group(1))  # clicking again flips it


def test_it_sorts_by_a_metric_descending_with_runs_lacking_it_still_last(client, cast, scored):
    login(client, cast["bob"])
    expected = [scored[k].pk for k in ("a", "c", "b")] + sorted([scored["nan"].pk, scored["none"].pk], reverse=True)
    assert ids(client.get(URL, {"sort": "-metric:loss"})) == expected


def test_sorting_by_a_metric_shows_it_even_when_not_a_chosen_column(client, cast, scored):
    login(client, cast["alice"])
    assert metric_headers(client.get(URL, {"sort": "metric:loss", "metric": "accuracy"})) == ["accuracy", "loss"]


def test_equal_values_are_ordered_by_id(client, cast, first):
    runs = [first, add_run(first), add_run(first)]
    for run in runs:
        log(run, loss=1.0)
    login(client, cast["alice"])
    assert ids(client.get(URL, {"sort": "metric:loss"})) == [run.pk for run in runs]
    assert ids(client.get(URL, {"sort": "-metric:loss"})) == [run.pk for run in runs][::-1]


def test_it_sorts_by_start_duration_name_status_and_compute(client, cast, first):
    now = timezone.now()
    early = add_run(first, display_name="b-run", started_at=now - timedelta(hours=2), ended_at=now - timedelta(hours=1))
    late = add_run(first, display_name="a-run", started_at=now - timedelta(minutes=5), ended_at=now,
                   status=RunStatus.FAILED)
    login(client, cast["alice"])
    # `first` never started and has a display name: it sorts last by start and duration, by name it is "first".
    assert ids(client.get(URL, {"sort": "started"})) == [early.pk, late.pk, first.pk]
    assert ids(client.get(URL, {"sort": "-started"})) == [late.pk, early.pk, first.pk]
    assert ids(client.get(URL, {"sort": "-duration"})) == [early.pk, late.pk, first.pk]
    assert ids(client.get(URL, {"sort": "duration"})) == [late.pk, early.pk, first.pk]
    assert ids(client.get(URL, {"sort": "name"})) == [late.pk, early.pk, first.pk]
    assert ids(client.get(URL, {"sort": "status"}))[0] == early.pk  # Completed < Failed < Queued
    assert len(ids(client.get(URL, {"sort": "-compute"}))) == 3


def test_pages_sorted_by_a_metric_walk_every_run_once_both_ways(client, cast, first):
    runs = [first] + [add_run(first) for _ in range(2 * PAGE_SIZE + 9)]
    for index, run in enumerate(runs):
        if index % 7:  # every 7th run has no loss: those come after the others, newest first
            log(run, loss=(index * 37) % 11 / 10)
    with_loss = sorted((run for index, run in enumerate(runs) if index % 7), key=lambda r: (-(runs.index(r) * 37 % 11), -r.pk))
    expected = [run.pk for run in with_loss] + sorted((run.pk for i, run in enumerate(runs) if not i % 7), reverse=True)
    login(client, cast["bob"])

    pages, response = [], client.get(URL, {"sort": "-metric:loss"})
    assert link(response, "← Previous") is None
    while True:
        pages.append(ids(response))
        below = link(response, "Next →")
        if below is None:
            break
        assert "below=" in below and "sort=-metric%3Aloss" in below
        response = client.get(URL + below)
    assert [len(page) for page in pages] == [50, 50, 9 + 1]
    assert sum(pages, []) == expected

    back = [pages[-1]]
    while (above := link(response, "← Previous")) is not None:
        response = client.get(URL + above)
        back.append(ids(response))
    assert back[::-1] == pages


# --- Filters --------------------------------------------------------------------------------------------------


def test_it_filters_by_tag_key_or_key_and_value(client, cast, first):
    tagged = add_run(first, tags={"team": "vision", "baseline": ""})
    other = add_run(first, tags={"team": "nlp"})
    login(client, cast["alice"])
    assert ids(client.get(URL, {"tag": "team"})) == [other.pk, tagged.pk]
    assert ids(client.get(URL, {"tag": "team:vision"})) == [tagged.pk]
    assert ids(client.get(URL, {"tag": ["team", "baseline"]})) == [tagged.pk]
    assert ids(client.get(URL, {"tag": "team:audio"})) == []
    assert "match the filters" in text(client.get(URL, {"tag": "team:audio"}))


def test_it_filters_by_a_metric_range_with_open_ends(client, cast, scored):
    login(client, cast["alice"])
    assert set(ids(client.get(URL, {"range": "loss:0.15:0.3"}))) == {scored["a"].pk, scored["c"].pk}
    assert set(ids(client.get(URL, {"range": "loss::0.2"}))) == {scored["b"].pk, scored["c"].pk}
    assert set(ids(client.get(URL, {"range": "loss:0.25:"}))) == {scored["a"].pk}
    # With the sort on the same metric, and on another.
    assert ids(client.get(URL, {"range": "loss::0.2", "sort": "-metric:loss"})) == [scored["c"].pk, scored["b"].pk]
    assert ids(client.get(URL, {"range": "accuracy:0.5:0.5", "sort": "metric:loss"})) == [scored["none"].pk]


def test_filters_combine_with_the_status_filter_and_are_kept_by_its_links(client, cast, scored):
    Run.objects.filter(pk=scored["a"].pk).update(status=RunStatus.FAILED)
    login(client, cast["alice"])
    response = client.get(URL, {"range": "loss::0.5", "status": "Failed"})
    assert ids(response) == [scored["a"].pk]
    assert 'href="?status=Completed&amp;range=loss%3A%3A0.5"' in response.content.decode()


@pytest.mark.parametrize(
    "query",
    [
        {"sort": "bogus"},
        {"sort": "metric:nothing"},
        {"sort": "metric:"},
        {"metric": "nothing"},
        {"range": "loss:a:1"},
        {"range": "loss::"},
        {"range": "loss:2:1"},
        {"range": "loss:0:inf"},
        {"range": "nothing:0:1"},
        {"range": "loss"},
        {"tag": "bad key!"},
        {"before": "5", "sort": "started"},
        {"below": "abc"},
        {"below": "0"},
        {"below": "5", "above": "6"},
        {"children_of": "x"},
    ],
)
def test_it_answers_400_with_a_message_for_a_bad_query(client, cast, scored, query):
    login(client, cast["alice"])
    response = client.get(URL, query)
    assert response.status_code == 400
    assert len(response.content.decode()) > 20  # says what is wrong


def test_a_page_cursor_naming_a_run_of_another_experiment_is_refused(client, cast, scored, workspace):
    elsewhere = make_run(workspace, cast["carol"], experiment="cifar")
    login(client, cast["alice"])
    response = client.get(URL, {"sort": "metric:loss", "below": elsewhere.pk})
    assert response.status_code == 400 and "follow the page links" in text(response)


# --- Child runs -------------------------------------------------------------------------------------------------


def test_child_runs_are_not_rows_but_behind_their_parents_expander(client, cast, first):
    kids = [first.create_child(f"fold {i}") for i in range(3)]
    grandchild = kids[0].create_child("inner")
    log(kids[1], loss=0.5)
    login(client, cast["bob"])
    response = client.get(URL)
    assert ids(response) == [first.pk]
    assert "All (1)" in text(response)
    expander = re.search(r'<button type="button" class="expander"[^>]*hx-get="([^"]+)"[^>]*>▸ 3</button>', response.content.decode())
    children = client.get(html.unescape(expander.group(1)), headers={"HX-Request": "true"})
    assert children.status_code == 200
    body = children.content.decode().strip()
    assert body.startswith("<tr") and "<table" not in body and "<html" not in body
    assert ids(children) == [kid.pk for kid in kids]
    assert [row["cells"] for row in rows(children)] == [["–"], ["0.5"], ["–"]]
    assert f'data-parent="{first.pk}"' in body and 'form="compare-form"' in body
    assert ids(client.get(URL, {"children_of": kids[0].pk})) == [grandchild.pk]


def test_children_of_a_run_of_another_experiment_are_not_found(client, cast, first, workspace):
    elsewhere = make_run(workspace, cast["carol"], experiment="cifar")
    elsewhere.create_child("kid")
    login(client, cast["alice"])
    assert client.get(URL, {"children_of": elsewhere.pk}).status_code == 404


def test_a_run_with_many_children_shows_the_first_ones_and_links_to_the_rest(client, cast, first, monkeypatch):
    from runs import runs_table

    monkeypatch.setattr(runs_table, "CHILDREN_LIMIT", 2)
    for i in range(3):
        first.create_child(f"kid {i}")
    login(client, cast["alice"])
    response = client.get(URL, {"children_of": first.pk})
    assert len(ids(response)) == 2
    assert "Showing the first 2 of 3 child runs" in text(response)


# --- Cost -------------------------------------------------------------------------------------------------------


def test_the_number_of_queries_does_not_grow_with_runs_metrics_or_children(client, cast, first, django_assert_max_num_queries):
    log(first, loss=1.0)
    login(client, cast["alice"])
    with django_assert_max_num_queries(20) as small:
        client.get(URL, {"sort": "-metric:loss"})
    runs = [add_run(first, tags={"k": str(i)}) for i in range(PAGE_SIZE + 5)]
    series = []
    for run in runs:
        series += [MetricSeries(run=run, experiment=first.experiment, name=name, kind=MetricKind.SCALAR, last_value=i)
                   for i, name in enumerate(["a", "b", "c", "loss", "e"])]
        Run.objects.bulk_create([Run(workspace=run.workspace, experiment=run.experiment, parent=run, snapshot=run.snapshot,
                                     entry_script="t.py", compute_target=run.compute_target)])
    MetricSeries.objects.bulk_create(series)
    for query in ({"sort": "-metric:loss"}, {}, {"sort": "-started", "tag": "k", "range": "a:0:"}):
        with django_assert_max_num_queries(len(small) + 1):
            response = client.get(URL, query)
        assert len(ids(response)) == PAGE_SIZE
        assert rows(response)[0]["cells"] and "▸ 1" in response.content.decode()
    with django_assert_max_num_queries(len(small)):
        client.get(URL, {"children_of": runs[0].pk})
