"""The compare page: 2-10 runs of an experiment, their metrics overlaid (one trace per run), their configuration
differences (parameters included), and their numeric parameters in parallel coordinates against a final metric."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from runs.metrics import CHART_POINTS, append_points
from studio.models import Workspace
from tests.conftest import assert_sent_to_sign_in, login, make_run, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]

URL = "/w/lab/experiments/mnist/compare/"


@pytest.fixture
def pair(cast, workspace):
    """Two runs differing in --lr, a tag and an env var; alike in --epochs, the `team` tag and SEED."""
    a = make_run(workspace, cast["carol"], experiment="mnist", display_name="small-lr",
                 arguments=["--lr", "0.01", "--epochs=5", "--optimizer", "adam"],
                 env_vars={"SEED": "1", "MODE": "fast"}, tags={"team": "vision", "variant": "a"})
    b = make_run(workspace, cast["carol"], experiment="mnist", display_name="big-lr",
                 arguments=["--lr", "0.1", "--epochs=5", "--optimizer", "sgd"],
                 env_vars={"SEED": "1", "MODE": "slow"}, tags={"team": "vision", "variant": "b"})
    for run, scale in ((a, 1.0), (b, 2.0)):
        append_points(run, "loss", [(step, scale / (step + 1), float(step)) for step in range(20)])
        append_points(run, "accuracy", [(step, 1 - scale / (step + 10), float(step)) for step in range(20)])
        append_points(run, "sys/cpu_percent", [(None, 50.0, 0.0)])
    return a, b


def query(*runs, **extra) -> dict:
    return {"run": [str(run.pk) for run in runs], **extra}


def embedded(response) -> dict:
    assert response.status_code == 200, response.content[:300]
    match = re.search(r'<script id="compare-data" type="application/json">(.*?)</script>', response.content.decode(), re.S)
    return json.loads(match.group(1))


def test_it_is_at_the_expected_url():
    assert reverse("compare_runs", args=["lab", "mnist"]) == URL


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_every_member_can_compare(client, cast, pair, who):
    login(client, cast[who])
    response = client.get(URL, query(*pair))
    assert response.status_code == 200
    assert "Compare 2 runs" in text(response)


def test_it_hides_the_workspace_from_an_outsider(client, cast, pair):
    login(client, cast["charlie"])
    assert client.get(URL, query(*pair)).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, pair):
    assert_sent_to_sign_in(client.get(URL), URL)


def test_it_refuses_a_post(client, cast, pair):
    login(client, cast["alice"])
    assert client.post(URL, query(*pair)).status_code == 405


@pytest.mark.parametrize("ids", [[], ["1"], ["abc", "1"], ["0", "1"], [str(n) for n in range(1, 12)]])
def test_it_answers_400_unless_given_two_to_ten_run_ids(client, cast, pair, ids):
    login(client, cast["alice"])
    response = client.get(URL, {"run": ids})
    assert response.status_code == 400
    assert "run:" in text(response)


def test_the_same_run_twice_is_one_run(client, cast, pair):
    login(client, cast["alice"])
    assert client.get(URL, query(pair[0], pair[0])).status_code == 400


def test_runs_of_another_experiment_or_workspace_are_not_found_with_a_message(client, cast, pair, workspace):
    other = make_run(workspace, cast["carol"], experiment="cifar")
    outside = make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="mnist")
    login(client, cast["alice"])
    for stranger in (other, outside):
        response = client.get(URL, query(pair[0], stranger))
        assert response.status_code == 404
        assert f"No run {stranger.pk} in experiment mnist" in text(response)
    assert client.get(URL, query(pair[0], pair[1], other)).status_code == 404


def test_child_runs_can_be_compared(client, cast, pair):
    child = pair[0].create_child("fold 1")
    login(client, cast["bob"])
    assert client.get(URL, query(pair[0], child)).status_code == 200


def test_it_overlays_each_common_metric_with_one_trace_per_run(client, cast, pair):
    login(client, cast["bob"])
    data = embedded(client.get(URL, query(*pair)))
    assert [run["id"] for run in data["runs"]] == [pair[0].pk, pair[1].pk]
    assert len({run["color"] for run in data["runs"]}) == 2
    # Default: metrics every run logged, system metrics left out.
    assert [chart["metric"] for chart in data["charts"]] == ["accuracy", "loss"]
    loss = data["charts"][1]
    assert [trace["run"] for trace in loss["traces"]] == [pair[0].pk, pair[1].pk]
    assert loss["traces"][0]["x"] == list(range(20))
    assert loss["traces"][1]["y"][0] == 2.0 and loss["traces"][1]["points"] == 20


def test_the_metric_chooser_picks_the_charts(client, cast, pair):
    third = make_run(pair[0].workspace, cast["carol"], experiment="mnist")
    append_points(third, "val_loss", [(None, 1.0, 0.0)])
    login(client, cast["alice"])
    data = embedded(client.get(URL, query(*pair, third, metric=["sys/cpu_percent", "val_loss"])))
    assert [chart["metric"] for chart in data["charts"]] == ["sys/cpu_percent", "val_loss"]
    assert [trace["run"] for trace in data["charts"][1]["traces"]] == [third.pk]
    page = text(client.get(URL, query(*pair, third)))
    assert "val_loss" in page and "(1 of 3 runs)" in page
    assert client.get(URL, query(*pair, metric="nothing")).status_code == 400


def test_long_series_are_downsampled_like_the_run_page(client, cast, pair):
    a, b = pair
    append_points(a, "long", [(step, float(step % 97), float(step)) for step in range(10_000)])
    append_points(b, "long", [(None, 1.0, 0.0)])
    login(client, cast["alice"])
    trace = embedded(client.get(URL, query(a, b, metric="long")))["charts"][0]["traces"][0]
    assert trace["points"] == 10_000 and len(trace["x"]) <= CHART_POINTS + 10
    assert max(trace["y"]) == 96.0 and min(trace["y"]) == 0.0


def test_non_finite_values_become_gaps(client, cast, pair):
    append_points(pair[0], "loss", [(None, float("nan"), 21.0)])
    login(client, cast["alice"])
    response = client.get(URL, query(*pair, metric="loss"))
    assert embedded(response)["charts"][0]["traces"][0]["y"][-1] is None


def test_the_differences_table_puts_differing_settings_first_and_identical_ones_apart(client, cast, pair):
    login(client, cast["alice"])
    page = client.get(URL, query(*pair)).content.decode()
    differing = re.search(r'<tbody id="differing-settings">(.*?)</tbody>', page, re.S).group(1)
    identical = re.search(r'<table class="grid compare-config" id="identical-settings">(.*?)</table>', page, re.S).group(1)
    assert '<span class="muted">parameter</span> <code>lr</code></th><td><code>0.01</code></td><td><code>0.1</code></td>' in differing
    assert "<code>variant</code></th><td><code>a</code></td><td><code>b</code></td>" in differing
    assert "<code>MODE</code>" in differing and "<code>optimizer</code>" in differing
    assert "<code>epochs</code>" not in differing and "<code>epochs</code>" in identical
    for alike in ("team", "SEED", "Entry script", "Compute target"):
        assert alike not in differing and alike in identical
    assert "identical settings" in page


def test_a_setting_only_one_run_has_shows_as_not_set_for_the_other(client, cast, pair, workspace):
    c = make_run(workspace, cast["carol"], experiment="mnist", arguments=["--lr", "0.5", "--fp16"])
    login(client, cast["alice"])
    differing = re.search(r'<tbody id="differing-settings">(.*?)</tbody>', client.get(URL, query(pair[0], c)).content.decode(), re.S).group(1)
    assert "<code>fp16</code></th><td><span class=\"muted\">not set</span></td><td><code>true</code></td>" in differing


def test_parallel_coordinates_plot_numeric_parameters_against_the_target_metric(client, cast, pair):
    login(client, cast["alice"])
    parcoords = embedded(client.get(URL, query(*pair)))["parcoords"]
    assert parcoords["target"] == "accuracy"  # the first chosen metric
    assert [d["label"] for d in parcoords["dimensions"]] == ["epochs", "lr", "accuracy"]
    assert parcoords["dimensions"][1]["values"] == [0.01, 0.1]
    final = [1 - 1 / 29, 1 - 2 / 29]
    assert parcoords["color"] == pytest.approx(final) and parcoords["runs"] == [pair[0].pk, pair[1].pk]

    parcoords = embedded(client.get(URL, query(*pair, target="loss")))["parcoords"]
    assert parcoords["target"] == "loss" and parcoords["dimensions"][-1]["label"] == "loss"
    assert parcoords["color"] == pytest.approx([1 / 20, 2 / 20])
    assert client.get(URL, query(*pair, target="nothing")).status_code == 400


def test_runs_without_the_target_or_a_numeric_value_are_left_out_with_a_note(client, cast, pair, workspace):
    c = make_run(workspace, cast["carol"], experiment="mnist", display_name="no-metrics",
                 arguments=["--lr", "fast", "--epochs", "5"])
    login(client, cast["alice"])
    response = client.get(URL, query(*pair, c, metric="loss"))
    parcoords = embedded(response)["parcoords"]
    assert parcoords["runs"] == [pair[0].pk, pair[1].pk]
    assert "Left out, no final loss: no-metrics #" in text(response)
    d = make_run(workspace, cast["carol"], experiment="mnist", arguments=["--lr", "fast", "--epochs", "7"])
    append_points(d, "loss", [(None, 0.3, 0.0)])
    response = client.get(URL, query(*pair, d, metric="loss"))
    assert [dim["label"] for dim in embedded(response)["parcoords"]["dimensions"]] == ["epochs", "loss"]
    assert "Not a number in every run, so not plotted: lr." in text(response)


def test_runs_without_any_numeric_parameter_are_left_out_of_the_parallel_coordinates(client, cast, pair):
    child = pair[0].create_child("fold 1")
    append_points(child, "loss", [(None, 0.5, 0.0)])
    login(client, cast["alice"])
    response = client.get(URL, query(*pair, child, metric="loss"))
    parcoords = embedded(response)["parcoords"]
    assert parcoords["runs"] == [pair[0].pk, pair[1].pk]
    assert [d["label"] for d in parcoords["dimensions"]] == ["epochs", "lr", "loss"]
    assert "Left out, no numeric parameters: fold 1 #" in text(response)


def test_the_page_draws_with_the_studios_own_plotly(client, cast, pair):
    login(client, cast["alice"])
    page = text(client.get(URL, query(*pair)))
    assert '<script src="/static/plotly/plotly.min.js"></script>' in page
    assert "cdn" not in page.lower()


def test_the_experiment_page_offers_compare_selected(client, cast, pair):
    login(client, cast["bob"])
    page = client.get("/w/lab/experiments/mnist/").content.decode()
    form = re.search(r'<form id="compare-form"[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page, re.S)
    assert form.group(1) == URL and "disabled>Compare selected</button>" in form.group(2)
    boxes = re.findall(r'<input type="checkbox" class="select-run" name="run" value="(\d+)" form="compare-form"', page)
    assert sorted(map(int, boxes)) == sorted(run.pk for run in pair)
