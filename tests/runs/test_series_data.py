"""One scalar series of a run as chart data: downsampled on the server, x as step, relative or wall-clock time,
non-finite values as null plus a list of markers, compact JSON."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from django.urls import reverse

from runs import metrics
from runs.models import MetricSeries, Run, RunStatus
from tests.conftest import assert_sent_to_sign_in, login, make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


@pytest.fixture
def run(cast, workspace) -> Run:
    run = make_run(workspace, cast["carol"], experiment="mnist")
    assert run.transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED,))
    return run


@pytest.fixture
def loss(run) -> MetricSeries:
    t0 = run.started_at.timestamp()
    metrics.append_points(run, "loss", [(0, 0.9, t0 + 1.0), (1, 0.5, t0 + 2.0), (5, 0.25, t0 + 3.5)])
    return MetricSeries.objects.get(run=run, name="loss")


def url(run, series) -> str:
    return f"/w/lab/runs/{run.pk}/metrics/{series.pk}/data/"


def strict_json(response) -> dict:
    """The body parsed the way a browser does: NaN or Infinity tokens would be an error."""

    def refuse(token):
        raise AssertionError(f"{token} in the JSON")

    return json.loads(response.content, parse_constant=refuse)


def test_it_is_at_the_expected_url(run, loss):
    assert reverse("series_data", args=["lab", run.pk, loss.pk]) == url(run, loss)


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_gives_every_member_the_chart_data(client, cast, run, loss, who):
    login(client, cast[who])
    response = client.get(url(run, loss))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    data = strict_json(response)
    assert data["name"] == "loss" and data["count"] == 3 and data["shown"] == 3


def test_it_hides_the_workspace_from_an_outsider(client, cast, run, loss):
    login(client, cast["charlie"])
    response = client.get(url(run, loss))
    assert response.status_code == 404
    assert b"0.25" not in response.content


def test_it_answers_404_for_a_run_of_another_workspace(client, cast, run, loss):
    from studio.models import Workspace

    foreign = make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret")
    metrics.append_points(foreign, "secret", [(0, 1.0, 1.0)])
    secret = MetricSeries.objects.get(run=foreign)
    login(client, cast["alice"])
    assert client.get(url(foreign, secret).replace("/w/elsewhere/", "/w/lab/")).status_code == 404
    assert client.get(url(foreign, secret)).status_code == 404
    login(client, cast["charlie"])
    assert client.get(url(run, loss).replace("/w/lab/", "/w/elsewhere/")).status_code == 404


def test_it_answers_404_for_a_series_of_another_run_of_the_workspace(client, cast, workspace, run, loss):
    other = make_run(workspace, cast["alice"], experiment="mnist")
    login(client, cast["alice"])
    assert client.get(f"/w/lab/runs/{other.pk}/metrics/{loss.pk}/data/").status_code == 404


def test_it_answers_404_for_a_series_that_is_not_scalar(client, cast, run):
    metrics.append_entries(run, "confusion", "table", [{"a": [1, 2]}])
    metrics.append_entries(run, "weights", "list", [[1, 2, 3]])
    login(client, cast["bob"])
    for name in ("confusion", "weights"):
        series = MetricSeries.objects.get(run=run, name=name)
        assert client.get(url(run, series)).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, run, loss):
    assert_sent_to_sign_in(client.get(url(run, loss)), url(run, loss))


def test_it_refuses_a_post(client, cast, run, loss):
    login(client, cast["alice"])
    assert client.post(url(run, loss)).status_code == 405


def test_x_is_the_step_by_default(client, cast, run, loss):
    login(client, cast["bob"])
    data = strict_json(client.get(url(run, loss)))
    assert data["x"] == [0, 1, 5]
    assert data["y"] == [0.9, 0.5, 0.25]
    assert data["nonfinite"] == []
    assert data["last"] == 0.25 and data["min"] == 0.25 and data["max"] == 0.9
    assert data["final"] is False
    assert strict_json(client.get(url(run, loss), {"x": "step"}))["x"] == [0, 1, 5]


def test_x_can_be_seconds_since_the_run_started(client, cast, run, loss):
    login(client, cast["bob"])
    data = strict_json(client.get(url(run, loss), {"x": "relative"}))
    assert data["x"] == pytest.approx([1.0, 2.0, 3.5], abs=1e-6)


def test_x_can_be_the_wall_clock_time_in_epoch_milliseconds(client, cast, run, loss):
    login(client, cast["bob"])
    data = strict_json(client.get(url(run, loss), {"x": "time"}))
    t0 = run.started_at.timestamp() * 1000
    assert data["x"] == pytest.approx([t0 + 1000, t0 + 2000, t0 + 3500], abs=0.01)


@pytest.mark.parametrize(
    "query", [{"x": "epoch"}, {"x": "STEP"}, {"max_points": "50"}, {"max_points": "5001"}, {"max_points": "lots"}]
)
def test_it_answers_400_for_a_bad_query(client, cast, run, loss, query):
    login(client, cast["bob"])
    assert client.get(url(run, loss), query).status_code == 400


def test_the_json_is_compact(client, cast, run, loss):
    login(client, cast["bob"])
    body = client.get(url(run, loss)).content.decode()
    assert ", " not in body and ": " not in body and "\n" not in body


def test_non_finite_values_are_null_and_listed_as_markers(client, cast, run):
    points = [
        (0, 1.0, 1.0),
        (1, math.nan, 2.0),
        (2, math.inf, 3.0),
        (3, -math.inf, 4.0),
        (4, math.nan, 5.0),
        (5, 2.0, 6.0),
    ]
    metrics.append_points(run, "grad_norm", points)
    series = MetricSeries.objects.get(run=run, name="grad_norm")
    login(client, cast["bob"])
    data = strict_json(client.get(url(run, series)))
    assert data["y"] == [1.0, None, None, None, None, 2.0]
    assert data["nonfinite"] == [
        {"x": 1, "value": "NaN"},
        {"x": 2, "value": "Infinity"},
        {"x": 3, "value": "-Infinity"},
        {"x": 4, "value": "NaN"},
    ]
    assert data["min"] == 1.0 and data["max"] == 2.0


def test_a_non_finite_last_value_is_sent_as_its_name(client, cast, run):
    metrics.append_points(run, "loss", [(0, 1.0, 1.0), (1, math.nan, 2.0)])
    series = MetricSeries.objects.get(run=run, name="loss")
    login(client, cast["bob"])
    assert strict_json(client.get(url(run, series)))["last"] == "NaN"


def test_the_data_of_a_final_run_says_so(client, cast, run, loss):
    run.transition(RunStatus.COMPLETED, from_states=(RunStatus.RUNNING,))
    login(client, cast["bob"])
    assert strict_json(client.get(url(run, loss)))["final"] is True


def test_max_points_limits_the_points_sent(client, cast, run):
    values = np.sin(np.arange(20_000) / 500.0)
    metrics.append_points(
        run, "wave", list(zip(range(20_000), values.tolist(), (1000.0 + np.arange(20_000)).tolist(), strict=True))
    )
    series = MetricSeries.objects.get(run=run, name="wave")
    login(client, cast["bob"])
    default = strict_json(client.get(url(run, series)))
    assert default["count"] == 20_000 and 1_900 <= default["shown"] <= 2_010
    small = strict_json(client.get(url(run, series), {"max_points": "100"}))
    assert small["count"] == 20_000 and small["shown"] <= 110
    assert small["x"][0] == 0 and small["x"][-1] == 19_999


def test_a_ten_million_point_series_is_sent_as_about_two_thousand_points_keeping_its_extremes(client, cast, run):
    total, batch = 10_000_000, 500_000
    spike_at, low_at = 5_000_000, 7_654_321
    rng = np.random.default_rng(7)
    t0 = run.started_at.timestamp()
    started = time.perf_counter()
    for start in range(0, total, batch):
        steps = np.arange(start, start + batch, dtype=np.float64)
        values = 1.0 + 0.1 * np.sin(steps / 10_000.0) + 0.01 * rng.random(batch)
        if start <= spike_at < start + batch:
            values[spike_at - start] = 1e6
        if start <= low_at < start + batch:
            values[low_at - start] = -3.0
        times = t0 + steps * 0.001
        metrics.append_points(run, "loss", list(zip(steps.tolist(), values.tolist(), times.tolist(), strict=True)))
    stored = time.perf_counter() - started
    series = MetricSeries.objects.get(run=run, name="loss")
    assert series.count == total
    login(client, cast["bob"])

    started = time.perf_counter()
    response = client.get(url(run, series))
    served = time.perf_counter() - started

    assert response.status_code == 200
    data = strict_json(response)
    print(
        f"\n10M points: stored in {stored:.1f} s; chart data {len(response.content):,} bytes in {served * 1000:.0f} ms"
    )
    assert data["count"] == total
    assert data["shown"] == len(data["x"]) == len(data["y"]) <= 2_100
    assert len(response.content) < 200_000
    assert data["x"][0] == 0 and data["x"][-1] == total - 1
    assert data["y"][0] == pytest.approx(1.0, abs=0.02)
    spikes = [(x, y) for x, y in zip(data["x"], data["y"], strict=True) if y > 10]
    assert spikes == [(spike_at, 1e6)]
    assert min(data["y"]) == -3.0 and data["x"][data["y"].index(-3.0)] == low_at
    assert data["max"] == 1e6 and data["min"] == -3.0
    assert data["x"] == sorted(data["x"])
    assert served < 2.0, f"the chart data took {served:.2f} s"

    started = time.perf_counter()
    by_time = client.get(url(run, series), {"x": "time"})
    served = time.perf_counter() - started
    print(f"10M points against wall-clock time: {len(by_time.content):,} bytes in {served * 1000:.0f} ms")
    assert len(by_time.content) < 200_000
    assert strict_json(by_time)["x"][0] == pytest.approx(t0 * 1000, abs=0.01)

    started = time.perf_counter()
    points, _ = metrics.read_scalars(series)
    print(
        f"of which reading and downsampling: {(time.perf_counter() - started) * 1000:.0f} ms ({len(points):,} points)"
    )
