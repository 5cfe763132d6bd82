"""The ingest API the SDK writes to: token scope, validation, and lossless ordered storage."""

from __future__ import annotations

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


def test_points_are_stored_in_order_without_loss(client, running):
    run, token = running
    for batch in range(20):
        points = [[None, batch * 5000 + i, 1.7e9 + i] for i in range(5000)]
        response = post(client, run.pk, "metrics", {"series": [{"name": "loss", "points": points}]}, token)
        assert response.status_code == 200 and response.json() == {"stored": 5000}
    series = run.metric_series.get(name="loss")
    assert series.count == 100_000
    raw = metrics.Points.concat([metrics.Points.decode(c.data) for c in series.chunks.order_by("seq")])
    assert raw.values.tolist() == [float(i) for i in range(100_000)]
    assert raw.steps.tolist() == [float(i) for i in range(100_000)]


def test_nan_and_infinity_are_accepted_as_strings_or_json_constants(client, running):
    run, token = running
    body = '{"series": [{"name": "x", "points": [[0, "NaN", 1], [1, Infinity, 1], [2, "-Infinity", 1]]}]}'
    response = client.post(f"/api/v1/runs/{run.pk}/metrics", data=body, content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    points, _ = metrics.read_scalars(run.metric_series.get(name="x"))
    assert math.isnan(points.values[0]) and points.values[1] == math.inf and points.values[2] == -math.inf


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"series": [{"name": "bad;name", "points": [[None, 1, 1]]}]}, "Invalid name"),
        ({"series": [{"name": "loss", "points": [[None, "high", 1]]}]}, "loss: value must be a number"),
        ({"series": [{"name": "loss", "points": [[None, True, 1]]}]}, "loss: value must be a number"),
        ({"series": [{"name": "loss", "points": [[None, 1]]}]}, "each point is [step or null, value, time]"),
        ({"series": [{"name": "loss", "points": [["NaN", 1, 1]]}]}, "loss: step must be a number"),
        ({"series": [{"name": "loss", "points": [[None, 1, 1]] * 10_001}]}, "at most 10,000 points per request"),
        ({"series": []}, "Send {'series'"),
        ({"nothing": 1}, "Send {'series'"),
    ],
)
def test_bad_metrics_get_a_clear_400(client, running, body, message):
    run, token = running
    response = post(client, run.pk, "metrics", body, token)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not run.metric_series.exists()


def test_a_body_that_is_not_json_gets_a_400(client, running):
    run, token = running
    response = client.post(f"/api/v1/runs/{run.pk}/metrics", data="not json", content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400 and response.json() == {"error": "The body must be JSON."}


def test_an_oversized_body_gets_a_413(client, running, settings):
    run, token = running
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post(client, run.pk, "metrics", {"series": [{"name": "x", "points": [[None, 1, 1]] * 200}]}, token)
    assert response.status_code == 413


def test_a_request_without_a_token_is_refused(client, running):
    run, _ = running
    response = client.post(f"/api/v1/runs/{run.pk}/metrics", data="{}", content_type="application/json")
    assert response.status_code == 401 and "Authorization: Bearer" in response.json()["error"]
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
    response = post(client, other.pk, "metrics", {"series": [{"name": "x", "points": [[None, 1, 1]]}]}, token)
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
    assert post(client, grandchild_id, "metrics", {"series": [{"name": "x", "points": [[None, 2, 1]]}]}, token).status_code == 200
    grandchild = Run.objects.get(pk=grandchild_id)
    assert grandchild.parent_id == child_id and grandchild.status == RunStatus.RUNNING
    assert Run.objects.get(pk=child_id).display_name == "fold-1"


def test_the_token_stops_working_when_the_run_ends(client, running):
    run, token = running
    run.end_with_descendants(RunStatus.COMPLETED)
    response = post(client, run.pk, "metrics", {"series": [{"name": "x", "points": [[None, 1, 1]]}]}, token)
    assert response.status_code == 403 and "has ended (Completed)" in response.json()["error"]


def test_children_end_with_their_parent(client, running):
    run, token = running
    child_id = post(client, run.pk, "children", {}, token).json()["run_id"]
    run.end_with_descendants(RunStatus.FAILED, "boom")
    child = Run.objects.get(pk=child_id)
    assert child.status == RunStatus.FAILED and f"Ended with its parent run {run.pk}" in child.reason


def test_a_child_reports_its_own_end(client, running):
    run, token = running
    child_id = post(client, run.pk, "children", {}, token).json()["run_id"]
    assert post(client, child_id, "status", {"status": "Failed", "reason": "diverged"}, token).status_code == 200
    child = Run.objects.get(pk=child_id)
    assert child.status == RunStatus.FAILED and child.reason == "diverged"
    response = post(client, child_id, "metrics", {"series": [{"name": "x", "points": [[None, 1, 1]]}]}, token)
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
    assert response.status_code == 400 and "kind must be list, row or table" in response.json()["error"]


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
