"""Scalar series in chunks, and downsampling that keeps what matters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runs import metrics
from runs.models import MetricChunk
from tests.conftest import make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


def test_downsampling_keeps_the_extremes_and_the_ends():
    rng = np.random.default_rng(1)
    values = rng.normal(size=1_000_000)
    values[123_457] = 50.0  # one spike up
    values[777_777] = -40.0  # one spike down
    index = metrics.downsample_indices(values, 2_000)
    assert len(index) <= 2_004
    assert {0, len(values) - 1, 123_457, 777_777} <= set(index.tolist())
    assert np.all(np.diff(index) > 0)


def test_downsampling_keeps_non_finite_points_as_markers():
    values = np.arange(10_000, dtype=np.float64)
    values[[10, 5000]] = [math.nan, math.inf]
    index = set(metrics.downsample_indices(values, 100).tolist())
    assert {10, 5000, 0, 9999} <= index


def test_points_across_chunk_boundaries_stay_in_order(cast, workspace, monkeypatch):
    monkeypatch.setattr(metrics, "CHUNK_POINTS", 1000)
    monkeypatch.setattr(metrics, "SUMMARY_POINTS", 100)
    run = make_run(workspace, cast["carol"])
    for start in range(0, 5_500, 700):
        metrics.append_points(run, "loss", [(None, float(i), 1e9 + i) for i in range(start, min(start + 700, 5_500))])
    series = run.metric_series.get(name="loss")
    assert series.count == 5_500 and series.last_value == 5_499 and series.last_step == 5_499
    assert series.min_value == 0 and series.max_value == 5_499
    chunks = list(MetricChunk.objects.filter(series=series).order_by("seq"))
    assert [c.count for c in chunks] == [1000] * 5 + [500]
    assert all(c.sealed for c in chunks[:5]) and not chunks[5].sealed
    raw = metrics.Points.concat([metrics.Points.decode(c.data) for c in chunks])
    assert raw.values.tolist() == [float(i) for i in range(5_500)]
    assert raw.steps.tolist() == [float(i) for i in range(5_500)]
    points, total = metrics.read_scalars(series, max_points=10_000)
    assert total == 5_500
    assert len(points) == 5 * 100 + 500  # summaries of sealed chunks, raw points of the open one
    assert points.values[0] == 0 and points.values[-1] == 5_499


def test_a_spike_survives_both_levels_of_downsampling(cast, workspace, monkeypatch):
    monkeypatch.setattr(metrics, "CHUNK_POINTS", 10_000)
    run = make_run(workspace, cast["carol"])
    values = np.sin(np.arange(200_000) / 1000.0)
    values[150_001] = 99.0
    metrics.append_points(run, "signal", list(zip([None] * len(values), values.tolist(), [0.0] * len(values), strict=True)))
    points, total = metrics.read_scalars(run.metric_series.get(name="signal"), max_points=2_000)
    assert total == 200_000 and len(points) <= 2_004
    assert 99.0 in points.values.tolist()
    assert points.steps[0] == 0 and points.steps[-1] == 199_999
    assert points.values.min() == pytest.approx(-1.0, abs=1e-5)


def test_nan_and_infinity_are_stored_as_such(cast, workspace):
    run = make_run(workspace, cast["carol"])
    metrics.append_points(run, "loss", [(None, 1.0, 0.0), (None, math.nan, 0.0), (None, math.inf, 0.0)])
    series = run.metric_series.get(name="loss")
    assert series.last_nonfinite == "Infinity" and series.last_display == "Infinity"
    assert series.min_value == 1.0 and series.max_value == 1.0
    points, _ = metrics.read_scalars(series)
    assert math.isnan(points.values[1]) and math.isinf(points.values[2])


def test_explicit_steps_are_kept_and_missing_ones_count_on(cast, workspace):
    run = make_run(workspace, cast["carol"])
    metrics.append_points(run, "lr", [(10, 0.1, 0.0), (None, 0.2, 0.0), (20.5, 0.3, 0.0)])
    points, _ = metrics.read_scalars(run.metric_series.get(name="lr"))
    assert points.steps.tolist() == [10.0, 1.0, 20.5]


def test_a_name_keeps_its_kind(cast, workspace):
    run = make_run(workspace, cast["carol"])
    metrics.append_entries(run, "cm", "table", [{"a": [1]}])
    with pytest.raises(metrics.MetricError, match="was logged as table"):
        metrics.append_points(run, "cm", [(None, 1.0, 0.0)])


@pytest.mark.parametrize("name", ["", " x", "a" * 256, "bad\nname", "semi;colon", None, 5])
def test_bad_names_are_refused(name):
    with pytest.raises(metrics.MetricError, match="Invalid name"):
        metrics.check_name(name)


def test_a_batch_is_a_segment_of_its_own_written_once_and_a_few_points_fill_a_small_one(cast, workspace):
    """A 1,000-point batch (MLflow's log_batch) never rewrites what was stored before; a live run's flushes of a
    few points share one small segment instead of making a row each."""
    run = make_run(workspace, cast["carol"])
    for start in range(0, 5_000, 1_000):
        metrics.append_points(run, "loss", [(i, float(i), 1e9 + i) for i in range(start, start + 1_000)])
    for start in range(5_000, 5_030, 10):
        metrics.append_points(run, "loss", [(i, float(i), 1e9 + i) for i in range(start, start + 10)])
    series = run.metric_series.get(name="loss")
    chunks = list(MetricChunk.objects.filter(series=series).order_by("seq"))
    assert [(c.count, c.sealed) for c in chunks] == [(1_000, False)] * 5 + [(30, False)]
    raw = metrics.Points.concat([metrics.Points.decode(c.data) for c in chunks])
    assert raw.steps.tolist() == [float(i) for i in range(5_030)]
    points, total = metrics.read_scalars(series, max_points=10_000)
    assert total == 5_030 and points.values.tolist() == raw.values.tolist()


def test_small_appends_fill_segments_and_a_full_chunk_is_sealed_as_one(cast, workspace, monkeypatch):
    monkeypatch.setattr(metrics, "CHUNK_POINTS", 1000)
    monkeypatch.setattr(metrics, "SEGMENT_POINTS", 300)
    monkeypatch.setattr(metrics, "SUMMARY_POINTS", 100)
    run = make_run(workspace, cast["carol"])
    for start in range(0, 1_400, 100):  # 14 appends of 100 points, as a client logging batches of 100
        metrics.append_points(run, "loss", [(i, float(i), 1e9 + i) for i in range(start, start + 100)])
    series = run.metric_series.get(name="loss")
    chunks = list(MetricChunk.objects.filter(series=series).order_by("seq"))
    # One sealed chunk of 1,000, then the open 400 points as a full segment and the start of the next.
    assert [(c.count, c.sealed) for c in chunks] == [(1000, True), (300, False), (100, False)]
    raw = metrics.Points.concat([metrics.Points.decode(c.data) for c in chunks])
    assert raw.steps.tolist() == [float(i) for i in range(1_400)] and raw.values.tolist() == raw.steps.tolist()
    points, total = metrics.read_scalars(series, max_points=10_000)
    assert total == 1_400 and len(points) == 100 + 400
    metrics.append_points(run, "loss", [(i, float(i), 1e9 + i) for i in range(1_400, 2_500)])  # one large append
    chunks = list(MetricChunk.objects.filter(series=series).order_by("seq"))
    assert [(c.count, c.sealed) for c in chunks] == [(1000, True), (1000, True), (300, False), (200, False)]
    raw = metrics.Points.concat([metrics.Points.decode(c.data) for c in chunks])
    assert raw.steps.tolist() == [float(i) for i in range(2_500)]
