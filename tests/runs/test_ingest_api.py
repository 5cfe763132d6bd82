"""The ingest API the SDK writes to: token scope, validation, and lossless ordered storage."""

from __future__ import annotations

import array
import base64
import json
import math

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from runs import metrics, storage, tokens
from runs.models import MetricEntry, Run, RunStatus
from tests.conftest import make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def start(run: Run) -> str:
    for status, before in ((RunStatus.PREPARING, RunStatus.QUEUED), (RunStatus.STARTING, RunStatus.PREPARING),
                           (RunStatus.RUNNING, RunStatus.STARTING)):
        assert run.transition(status, from_states=(before,))
    return tokens.issue(run)


@pytest.fixture
def running(cast, workspace):
    run = make_run(workspace, cast["carol"])
    return run, start(run)


def post(client, run_id, route, body, token, **extra):
    return client.post(f"/api/v1/runs/{run_id}/{route}", data=json.dumps(body), content_type="application/json",
                       headers={"Authorization": f"Bearer {token}"}, **extra)


def series(name="loss", values=(1.0,), steps=None, times=None, **extra) -> dict:
    values = list(values)
    body = {"name": name, "values": values, "times": list(times) if times is not None else [1.7e9] * len(values)}
    if steps is not None:
        body["steps"] = list(steps)
    return {**body, **extra}


def packed(steps, values, times) -> dict:
    raw = array.array("d", [*steps, *values, *times])
    return {"name": "loss", "count": len(values), "packed": base64.b64encode(raw.tobytes()).decode()}


def stored_points(run, name="loss") -> metrics.Points:
    found = run.metric_series.get(name=name)
    return metrics.Points.concat([metrics.Points.decode(c.data) for c in found.chunks.order_by("seq")])


def test_points_are_stored_in_order_without_loss(client, running):
    run, token = running
    for batch in range(4):
        values = [float(batch * 25_000 + i) for i in range(25_000)]
        response = post(client, run.pk, "metrics", {"series": [series(values=values)]}, token)
        assert response.status_code == 200 and response.json() == {"stored": 25_000}
    assert run.metric_series.get(name="loss").count == 100_000
    raw = stored_points(run)
    assert raw.values.tolist() == [float(i) for i in range(100_000)]
    assert raw.steps.tolist() == [float(i) for i in range(100_000)]


def test_packed_columns_are_stored_as_sent(client, running):
    run, token = running
    steps, values = [0.0, math.nan, 7.0], [0.5, math.nan, -math.inf]
    response = post(client, run.pk, "metrics", {"series": [packed(steps, values, [1.0, 2.0, 3.0])]}, token)
    assert response.status_code == 200 and response.json() == {"stored": 3}
    raw = stored_points(run)
    assert raw.steps.tolist() == [0.0, 1.0, 7.0]  # a NaN step is the next one
    assert raw.values[0] == 0.5 and math.isnan(raw.values[1]) and raw.values[2] == -math.inf
    assert raw.times.tolist() == [1.0, 2.0, 3.0]


def test_a_missing_step_counts_on_from_the_series(client, running):
    run, token = running
    post(client, run.pk, "metrics", {"series": [series(values=[1, 2])]}, token)
    post(client, run.pk, "metrics", {"series": [series(values=[3, 4, 5], steps=[None, 10, None])]}, token)
    assert stored_points(run).steps.tolist() == [0, 1, 2, 10, 4]


def test_nan_and_infinity_are_accepted_as_strings(client, running):
    run, token = running
    response = post(client, run.pk, "metrics", {"series": [series("x", ["NaN", "Infinity", "-Infinity"])]}, token)
    assert response.status_code == 200
    points, _ = metrics.read_scalars(run.metric_series.get(name="x"))
    assert math.isnan(points.values[0]) and points.values[1] == math.inf and points.values[2] == -math.inf


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"series": [series("bad;name")]}, "Invalid name"),
        ({"series": [series(values=["high"])]}, "values.0"),
        ({"series": [series(values=[1], times=[1, 2])]}, "the same length"),
        ({"series": [series(values=[1], steps=["NaN"])]}, "steps.0"),
        ({"series": [series(values=[1], steps=[float("1e300")])]}, "steps.0"),
        ({"series": [series(values=[1], times=[-1])]}, "times.0"),
        ({"series": [series(values=[1.0] * 100_001)]}, "100,000 points"),
        ({"series": [{"name": "loss", "count": 2, "packed": "AAAA"}]}, "packed holds 3 bytes"),
        ({"series": [{"name": "loss", "count": 1, "packed": "not base64!"}]}, "not base64"),
        ({"series": [packed([math.inf], [1.0], [1.0])]}, "steps must be finite"),
        ({"series": []}, "series"),
        ({"nothing": 1}, "series"),
    ],
)
def test_bad_metrics_get_a_clear_400(client, running, body, message):
    run, token = running
    response = post(client, run.pk, "metrics", body, token)
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]
    assert not run.metric_series.exists()


@pytest.mark.parametrize("number", ["1" * 400, "1e400", "-1e999"])
def test_a_number_that_does_not_fit_a_float_is_a_400(client, running, number):
    run, token = running
    for where in (f'"values": [{number}], "times": [1]', f'"values": [1], "steps": [{number}], "times": [1]',
                  f'"values": [1], "times": [{number}]'):
        response = client.post(f"/api/v1/runs/{run.pk}/metrics", data=f'{{"series": [{{"name": "x", {where}}}]}}',
                               content_type="application/json", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 400
        assert "not valid JSON" in response.json()["error"] and "infinity" in response.json()["error"]
    assert not run.metric_series.exists()


def test_json_nested_a_thousand_deep_is_a_400(client, running):
    run, token = running
    for depth in (1_000, 5_000):
        nested = "[" * depth + "1" + "]" * depth
        for route, body in (("metrics", f'{{"series": {nested}}}'), ("tags", f'{{"tags": {{"a": {nested}}}}}'),
                            ("entries", f'{{"entries": [{{"name": "x", "kind": "list", "data": {nested}}}]}}')):
            response = client.post(f"/api/v1/runs/{run.pk}/{route}", data=body, content_type="application/json",
                                   headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 400, (route, depth, response.content[:200])
            assert response.json()["error"]


def test_a_body_that_is_not_json_gets_a_400(client, running):
    run, token = running
    response = client.post(f"/api/v1/runs/{run.pk}/metrics", data="not json", content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400 and response.json()["error"].startswith("The body is not valid JSON")


def test_an_oversized_body_gets_a_413(client, running, settings):
    run, token = running
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post(client, run.pk, "metrics", {"series": [series("x", [1] * 200)]}, token)
    assert response.status_code == 413 and "too large" in response.json()["error"]


def test_a_request_without_a_token_is_refused(client, running):
    run, _ = running
    response = client.post(f"/api/v1/runs/{run.pk}/metrics", data="{}", content_type="application/json")
    assert response.status_code == 401 and "Authorization" in response.json()["error"]
    response = post(client, run.pk, "metrics", {}, f"{run.pk}.wrong-secret")
    assert response.status_code == 401


def test_a_session_is_not_a_token(client, running, cast):
    run, _ = running
    client.force_login(cast["alice"])
    response = client.post(f"/api/v1/runs/{run.pk}/tags", data='{"tags": {"a": "b"}}', content_type="application/json")
    assert response.status_code == 401


def test_a_runs_token_cannot_write_to_another_run(client, running, cast, workspace):
    run, token = running
    other = make_run(workspace, cast["carol"])
    start(other)
    response = post(client, other.pk, "metrics", {"series": [series("x")]}, token)
    assert response.status_code == 403
    assert f"only to run {run.pk} and its child runs" in response.json()["error"]
    assert not other.metric_series.exists()


def test_a_child_runs_token_cannot_write_to_its_parent(client, running):
    parent, _ = running
    child = parent.create_child("fold-1")
    child_token = tokens.issue(child)
    response = post(client, parent.pk, "tags", {"tags": {"x": "1"}}, child_token)
    assert response.status_code == 403
    assert Run.objects.get(pk=parent.pk).tags == {}


def test_a_token_writes_to_its_children_and_grandchildren(client, running):
    run, token = running
    response = post(client, run.pk, "children", {"name": "fold-1"}, token)
    assert response.status_code == 201
    child_id = response.json()["run_id"]
    grandchild_id = post(client, child_id, "children", {"name": None}, token).json()["run_id"]
    assert post(client, grandchild_id, "metrics", {"series": [series("x", [2])]}, token).status_code == 200
    grandchild = Run.objects.get(pk=grandchild_id)
    assert grandchild.parent_id == child_id and grandchild.status == RunStatus.RUNNING
    assert Run.objects.get(pk=child_id).display_name == "fold-1"


def test_the_token_stops_working_when_the_run_ends(client, running):
    run, token = running
    run.end_with_descendants(RunStatus.COMPLETED)
    response = post(client, run.pk, "metrics", {"series": [series("x")]}, token)
    assert response.status_code == 403 and "has ended (Completed)" in response.json()["error"]


def test_children_end_with_their_parent(client, running):
    run, token = running
    child_id = post(client, run.pk, "children", {"name": None}, token).json()["run_id"]
    run.end_with_descendants(RunStatus.FAILED, "boom")
    child = Run.objects.get(pk=child_id)
    assert child.status == RunStatus.FAILED and f"Ended with its parent run {run.pk}" in child.reason


def test_a_child_reports_its_own_end(client, running):
    run, token = running
    child_id = post(client, run.pk, "children", {"name": None}, token).json()["run_id"]
    assert post(client, child_id, "status", {"status": "Failed", "reason": "diverged"}, token).status_code == 200
    child = Run.objects.get(pk=child_id)
    assert child.status == RunStatus.FAILED and child.reason == "diverged"
    response = post(client, child_id, "metrics", {"series": [series("x")]}, token)
    assert response.status_code == 409


def test_the_scripts_own_run_records_a_reported_failure(client, running):
    run, token = running
    assert post(client, run.pk, "status", {"status": "Failed", "reason": "accuracy too low"}, token).status_code == 200
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.reported_failure == "accuracy too low"


def test_tags_merge_and_read_back(client, running):
    run, token = running
    assert post(client, run.pk, "tags", {"tags": {"model": "sgd", "best": None}}, token).json()["tags"] == {"model": "sgd", "best": ""}
    response = client.get(f"/api/v1/runs/{run.pk}/tags", headers={"Authorization": f"Bearer {token}"})
    assert response.json() == {"tags": {"model": "sgd", "best": ""}}
    assert post(client, run.pk, "tags", {"tags": {"bad key!": "x"}}, token).status_code == 400


def test_entries_validate_their_shape(client, running):
    run, token = running
    ok = {"entries": [{"name": "cm", "kind": "table", "data": {"a": [1, 2], "b": [3, "NaN"]}},
                      {"name": "val", "kind": "row", "data": {"epoch": 1, "acc": 0.9}},
                      {"name": "lrs", "kind": "list", "data": [0.1, 0.01]}]}
    assert post(client, run.pk, "entries", ok, token).status_code == 200
    assert MetricEntry.objects.get(series__name="cm").data == {"a": [1, 2], "b": [3, "NaN"]}
    bad = {"entries": [{"name": "cm2", "kind": "table", "data": {"a": [1, 2], "b": [3]}}]}
    response = post(client, run.pk, "entries", bad, token)
    assert response.status_code == 400 and "same length" in response.json()["error"]
    response = post(client, run.pk, "entries", {"entries": [{"name": "x", "kind": "blob", "data": 1}]}, token)
    assert response.status_code == 400 and "'list', 'row' or 'table'" in response.json()["error"]


def upload(client, run_id, route, token, name, filename, content):
    return client.post(f"/api/v1/runs/{run_id}/{route}", data={"name": name, "file": SimpleUploadedFile(filename, content)},
                       headers={"Authorization": f"Bearer {token}"})


def test_images_must_be_png_jpeg_or_svg(client, running):
    run, token = running
    assert upload(client, run.pk, "images", token, "roc", "roc.png", PNG).status_code == 201
    assert upload(client, run.pk, "images", token, "vec", "v.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>").status_code == 201
    response = upload(client, run.pk, "images", token, "evil", "x.png", b"<html><script>alert(1)</script>")
    assert response.status_code == 400 and response.json()["error"] == "Images must be PNG, JPEG or SVG."
    entry = MetricEntry.objects.get(series__name="roc")
    assert (storage.run_dir(run.pk) / entry.data["file"]).read_bytes() == PNG


def test_an_image_over_the_limit_is_refused(client, running, settings):
    run, token = running
    settings.STUDIO_IMAGE_MAX_BYTES = 10
    assert upload(client, run.pk, "images", token, "roc", "roc.png", PNG).status_code == 413


@pytest.mark.parametrize("name", ["../escape.txt", "/abs.txt", "a/../../b", "..", "back\\slash"])
def test_uploaded_files_stay_inside_the_outputs(client, running, name):
    run, token = running
    response = upload(client, run.pk, "files", token, name, "f.txt", b"data")
    assert response.status_code == 400
    assert not any(p.is_file() for p in storage.run_dir(run.pk).parent.rglob("*"))


def test_an_uploaded_file_lands_in_the_outputs(client, running):
    run, token = running
    assert upload(client, run.pk, "files", token, "plots/loss.txt", "f.txt", b"data").status_code == 201
    assert {"path": "outputs/plots/loss.txt", "size": 4} in storage.list_stored_files(run.pk)


@pytest.mark.parametrize("route", ["metrics", "entries", "images", "files", "children", "status"])
def test_reading_a_write_route_is_refused(client, running, route):
    run, token = running
    response = client.get(f"/api/v1/runs/{run.pk}/{route}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 405 and response["Allow"] == "POST"


def test_images_of_similar_names_never_overwrite_each_other(client, running):
    run, token = running
    assert upload(client, run.pk, "images", token, "plots/roc", "a.png", PNG + b"first").status_code == 201
    assert upload(client, run.pk, "images", token, "plots_roc", "b.png", PNG + b"second").status_code == 201
    stored = {e.series.name: (storage.run_dir(run.pk) / e.data["file"]).read_bytes() for e in MetricEntry.objects.select_related("series")}
    assert stored == {"plots/roc": PNG + b"first", "plots_roc": PNG + b"second"}


def test_an_svg_with_a_prolog_is_an_image(client, running):
    run, token = running
    svg = b'<?xml version="1.0"?>\n<!-- made by hand -->\n<!DOCTYPE svg>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>'
    assert upload(client, run.pk, "images", token, "vec", "v.svg", svg).status_code == 201
