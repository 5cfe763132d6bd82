"""What MLflow's tracking routes do to the studio's runs: ordinary runs that no worker executes, with the client's
status and times, parameters, tags, metrics in the chunked series, and searches."""

from __future__ import annotations

import pytest
from django.utils import timezone

from mlflow_api.models import MlflowRun
from runs import execution, metrics
from runs.models import MetricSeries, Run, RunGitInfo, RunStatus, TrackedBy
from tests.mlflow_api.conftest import assert_error, now_ms

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


def studio_run(run_id: str) -> Run:
    return Run.objects.get(mlflow__run_uuid=run_id)


def test_a_run_is_an_ordinary_run_with_the_clients_start_and_end(carol_mlflow, cast):
    started = now_ms() - 60_000
    run_id = carol_mlflow.new_run(run_name="baseline", user_id="ci-bot", tags=[
        {"key": "mlflow.source.name", "value": "train.py"}, {"key": "mlflow.user", "value": "ci-bot"},
        {"key": "team", "value": "vision"}], start_time=started)
    run = studio_run(run_id)
    assert (run.tracked_by, run.status, run.display_name, run.entry_script) == (
        TrackedBy.MLFLOW, RunStatus.RUNNING, "baseline", "train.py")
    assert run.created_by == cast["carol"] and run.tags == {"team": "vision"} and run.worker == ""
    assert abs(run.started_at.timestamp() * 1000 - started) < 1
    assert MlflowRun.objects.get(run=run).system_tags["mlflow.source.name"] == "train.py"
    ended = now_ms()
    info = carol_mlflow.post("runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": ended}).json()
    assert info["run_info"]["status"] == "FINISHED" and info["run_info"]["end_time"] == ended
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED and abs(run.ended_at.timestamp() * 1000 - ended) < 1
    assert [change.status for change in run.status_changes.all()] == [RunStatus.RUNNING, RunStatus.COMPLETED]


def test_statuses_follow_the_client_even_back_to_running(carol_mlflow):
    run_id = carol_mlflow.new_run()
    for status, studio in (("FAILED", RunStatus.FAILED), ("RUNNING", RunStatus.RUNNING), ("KILLED", RunStatus.CANCELED),
                           ("RUNNING", RunStatus.RUNNING), ("FINISHED", RunStatus.COMPLETED)):
        assert carol_mlflow.post("runs/update", {"run_id": run_id, "status": status}).status_code == 200
        run = studio_run(run_id)
        assert run.status == studio
        assert (run.ended_at is None) == (studio == RunStatus.RUNNING)
    got = carol_mlflow.get("runs/get", run_id=run_id).json()["run"]["info"]
    assert got["status"] == "FINISHED" and got["end_time"] >= got["start_time"]


def test_the_reaper_and_the_workers_leave_an_mlflow_run_alone(carol_mlflow, monkeypatch):
    run_id = carol_mlflow.new_run()
    asked = []
    monkeypatch.setattr(execution, "ask_adoption", lambda run: asked.append(run.pk) or True)
    Run.objects.filter(mlflow__run_uuid=run_id).update(created_at=timezone.now() - timezone.timedelta(hours=1))
    execution.reap_lost_runs()
    assert asked == [] and studio_run(run_id).status == RunStatus.RUNNING
    assert execution.adopt_run(studio_run(run_id).pk) == "nothing to adopt"
    assert studio_run(run_id).status == RunStatus.RUNNING


def test_canceling_an_mlflow_run_in_the_studio_ends_it_at_once(carol_mlflow):
    run_id = carol_mlflow.new_run()
    run = studio_run(run_id)
    assert run.request_cancel() is True
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELED and run.ended_at is not None


def test_a_batch_of_1000_points_is_one_append_and_the_history_pages_through_it(carol_mlflow, monkeypatch):
    run_id = carol_mlflow.new_run()
    appends = []
    original = metrics.append_scalars
    monkeypatch.setattr(metrics, "append_scalars", lambda *args, **kwargs: appends.append(len(args[2])) or original(
        *args, **kwargs))
    monkeypatch.setattr(metrics, "CHUNK_POINTS", 1000)
    monkeypatch.setattr(metrics, "SEGMENT_POINTS", 400)
    start = now_ms()
    for first in range(0, 2500, 1000):
        batch = [{"key": "loss", "value": i / 10, "timestamp": start + i, "step": i}
                 for i in range(first, min(first + 1000, 2500))]
        if first == 2000:
            batch += [{"key": "acc", "value": 0.5, "timestamp": start, "step": first}]
        assert carol_mlflow.post("runs/log-batch", {"run_id": run_id, "metrics": batch}).status_code == 200
    assert appends == [1000, 1000, 500, 1]  # one append per metric name and request
    points, token = [], None
    while True:
        page = carol_mlflow.get("metrics/get-history", run_id=run_id, metric_key="loss", max_results=700,
                                **({"page_token": token} if token else {})).json()
        points += page["metrics"]
        token = page.get("next_page_token")
        if not token:
            break
    assert [point["step"] for point in points] == list(range(2500))
    assert [point["value"] for point in points] == [i / 10 for i in range(2500)]
    assert [point["timestamp"] for point in points] == [start + i for i in range(2500)]
    latest = carol_mlflow.get("runs/get", run_id=run_id).json()["run"]["data"]["metrics"]
    assert {item["key"]: (item["value"], item["step"]) for item in latest} == {"loss": (249.9, 2499), "acc": (0.5, 2000)}
    assert MetricSeries.objects.get(run=studio_run(run_id), name="loss").count == 2500


def test_points_sent_again_with_a_models_id_are_kept_once(carol_mlflow):
    run_id = carol_mlflow.new_run()
    experiment_id = carol_mlflow.get("runs/get", run_id=run_id).json()["run"]["info"]["experiment_id"]
    point = {"key": "loss", "value": 0.5, "timestamp": 1_700_000_000_000, "step": 0}
    carol_mlflow.post("runs/log-metric", {"run_id": run_id, **point})
    model = carol_mlflow.post("logged-models", {"experiment_id": experiment_id, "name": "m", "source_run_id": run_id})
    model_id = model.json()["model"]["info"]["model_id"]
    carol_mlflow.post("runs/log-batch", {"run_id": run_id, "metrics": [{**point, "model_id": model_id}]})
    history = carol_mlflow.get("metrics/get-history", run_id=run_id, metric_key="loss").json()["metrics"]
    assert len(history) == 1
    got = carol_mlflow.get(f"logged-models/{model_id}").json()["model"]
    assert got["data"]["metrics"][0]["value"] == 0.5 and got["data"]["metrics"][0]["model_id"] == model_id
    assert got["info"]["artifact_uri"].endswith(f"/{run_id}/artifacts/m")


def test_mlflows_own_tags_are_kept_apart_and_fill_the_runs_fields(carol_mlflow):
    parent_id = carol_mlflow.new_run()
    run_id = carol_mlflow.new_run(tags=[{"key": "mlflow.parentRunId", "value": parent_id}])
    batch = {"run_id": run_id, "tags": [
        {"key": "mlflow.source.git.commit", "value": "0123abcd" * 5}, {"key": "mlflow.source.git.branch", "value": "main"},
        {"key": "mlflow.source.git.repoURL", "value": "https://user:secret@example.com/lab.git"},
        {"key": "mlflow.runName", "value": "renamed"}, {"key": "owner", "value": "carol"}]}
    assert carol_mlflow.post("runs/log-batch", batch).status_code == 200
    run = studio_run(run_id)
    assert run.parent == studio_run(parent_id) and run.display_name == "renamed" and run.tags == {"owner": "carol"}
    git = RunGitInfo.objects.get(run=run)
    assert (git.commit, git.branch, git.remote_url) == ("0123abcd" * 5, "main", "https://example.com/lab.git")
    assert carol_mlflow.post("runs/delete-tag", {"run_id": run_id, "key": "owner"}).status_code == 200
    tags = {tag["key"]: tag["value"] for tag in carol_mlflow.get("runs/get", run_id=run_id).json()["run"]["data"]["tags"]}
    assert "owner" not in tags and tags["mlflow.source.git.branch"] == "main" and tags["studio.run_id"] == str(run.pk)


def test_runs_without_an_experiment_go_to_mlflows_default_one(carol_mlflow):
    run = carol_mlflow.post("runs/create", {"start_time": now_ms()}).json()["run"]
    default = carol_mlflow.get("experiments/get", experiment_id="0").json()["experiment"]
    assert default["name"] == "Default" and run["info"]["experiment_id"] == default["experiment_id"]


def test_searches_filter_and_order_by_metrics_params_tags_and_attributes(carol_mlflow):
    made = {}
    for name, loss, optimizer in (("a", 0.3, "adam"), ("b", 0.1, "sgd"), ("c", 0.2, "adam")):
        run_id = carol_mlflow.new_run(experiment="search", run_name=f"run-{name}")
        carol_mlflow.post("runs/log-batch", {"run_id": run_id, "params": [{"key": "optimizer", "value": optimizer}],
                                             "tags": [{"key": "group", "value": name}],
                                             "metrics": [{"key": "loss", "value": loss, "timestamp": 1, "step": 0}]})
        made[name] = run_id
    carol_mlflow.post("runs/update", {"run_id": made["b"], "status": "FINISHED"})
    experiment_id = carol_mlflow.get("experiments/get-by-name", experiment_name="search").json()["experiment"][
        "experiment_id"]

    def found(**search) -> list[str]:
        response = carol_mlflow.post("runs/search", {"experiment_ids": [experiment_id], **search})
        assert response.status_code == 200, response.content
        names = {run_id: name for name, run_id in made.items()}
        return [names[run["info"]["run_id"]] for run in response.json().get("runs", [])]

    assert found() == ["c", "b", "a"]  # newest first
    assert found(order_by=["metrics.loss ASC"]) == ["b", "c", "a"]
    assert found(filter="metrics.loss > 0.15", order_by=["metrics.loss DESC"]) == ["a", "c"]
    assert found(filter="params.optimizer = 'adam' and metrics.loss <= 0.2") == ["c"]
    assert found(filter="tags.group != 'a'", order_by=["tags.group"]) == ["b", "c"]
    assert found(filter="attributes.status = 'FINISHED'") == ["b"]
    assert found(filter="attributes.run_name LIKE 'run-%' and status = 'RUNNING'", order_by=["run_name"]) == ["a", "c"]
    assert found(filter=f"attributes.run_id IN ('{made['a']}', '{made['b']}')", order_by=["run_name DESC"]) == ["b", "a"]
    first = carol_mlflow.post("runs/search", {"experiment_ids": [experiment_id], "max_results": 2}).json()
    second = carol_mlflow.post("runs/search", {"experiment_ids": [experiment_id], "max_results": 2,
                                               "page_token": first["next_page_token"]}).json()
    assert len(first["runs"]) == 2 and len(second["runs"]) == 1 and "next_page_token" not in second


def test_experiments_are_found_by_name_id_and_search(carol_mlflow):
    created = carol_mlflow.post("experiments/create", {"name": "mnist"}).json()["experiment_id"]
    by_name = carol_mlflow.get("experiments/get-by-name", experiment_name="mnist").json()["experiment"]
    assert by_name["experiment_id"] == created and by_name["lifecycle_stage"] == "active"
    assert carol_mlflow.get("experiments/get", experiment_id=created).json()["experiment"]["name"] == "mnist"
    carol_mlflow.post("experiments/create", {"name": "cifar"})
    names = [item["name"] for item in carol_mlflow.post("experiments/search", {
        "filter": "name LIKE '%i%'", "order_by": ["name ASC"]}).json()["experiments"]]
    assert names == ["cifar", "mnist"]


def test_the_links_an_mlflow_client_prints_open_the_studios_pages(client, cast, carol_mlflow):
    run_id = carol_mlflow.new_run(experiment="links")
    run = studio_run(run_id)
    client.force_login(cast["bob"])
    page = client.get("/mlflow/lab/")
    assert page.status_code == 200 and b"mlflow_links.js" in page.content and b"MLFLOW_TRACKING_URI=" in page.content
    assert client.get(f"/mlflow/lab/runs/{run_id}/").url == f"/w/lab/runs/{run.pk}/"
    assert client.get(f"/mlflow/lab/experiments/{run.experiment_id}/").url == "/w/lab/experiments/links/"
    assert client.get(f"/mlflow/lab/runs/{'e' * 32}/").status_code == 404
    client.force_login(cast["charlie"])
    assert client.get(f"/mlflow/lab/runs/{run_id}/").status_code == 404


def test_the_run_page_hears_of_an_mlflow_clients_metrics_tags_and_nested_runs_as_they_come(
        carol_mlflow, redis_client, django_capture_on_commit_callbacks):
    from runs import live

    def events(run_id: str) -> list[dict]:
        entries = redis_client.xrange(live.stream_key(studio_run(run_id).pk))
        return [{key.decode(): value.decode() for key, value in fields.items()} for _, fields in entries]

    parent_id = carol_mlflow.new_run()
    with django_capture_on_commit_callbacks(execute=True):
        run_id = carol_mlflow.new_run(tags=[{"key": "mlflow.parentRunId", "value": parent_id}])
        carol_mlflow.post("runs/log-metric", {"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": now_ms(),
                                              "step": 1})
        carol_mlflow.post("runs/log-batch", {"run_id": run_id, "metrics": [
            {"key": "acc", "value": 0.9, "timestamp": now_ms(), "step": 1},
            {"key": "f1", "value": 0.8, "timestamp": now_ms(), "step": 1}]})
        carol_mlflow.post("runs/set-tag", {"run_id": run_id, "key": "stage", "value": "tuning"})
    mine = events(run_id)
    assert {"k": "metric", "names": "loss"} in mine and {"k": "metric", "names": "acc,f1"} in mine
    assert {"k": "tags", "tags": '{"stage":"tuning"}'} in mine
    child = str(studio_run(run_id).pk)
    assert {"k": "child", "run": child} in events(parent_id)  # the parent's Children tab


IRIS = {"name": "iris", "digest": "1a2b3c4d", "source_type": "code", "source": '{"tags": {}}',
        "schema": '{"mlflow_tensorspec": {}}', "profile": '{"features_shape": [150, 4]}'}


def test_a_runs_datasets_are_kept_once_and_read_back_as_mlflow_shows_them(carol_mlflow):
    run_id = carol_mlflow.new_run()
    train = {"dataset": IRIS, "tags": [{"key": "mlflow.data.context", "value": "train"}]}
    for _ in range(2):  # autologging sends the same dataset with each fit
        assert carol_mlflow.post("runs/log-inputs", {"run_id": run_id, "datasets": [train]}).status_code == 200
    evaluation = {"dataset": IRIS, "tags": [{"key": "mlflow.data.context", "value": "eval"}]}
    assert carol_mlflow.post("runs/log-inputs", {"run_id": run_id, "datasets": [evaluation]}).status_code == 200
    inputs = carol_mlflow.get("runs/get", run_id=run_id).json()["run"]["inputs"]
    assert inputs == {"dataset_inputs": [train, evaluation]}


@pytest.mark.parametrize("dataset, fragment", [
    ({**IRIS, "digest": ""}, "digest"),
    ({key: value for key, value in IRIS.items() if key != "source_type"}, "source_type"),
    ({**IRIS, "name": "x" * 501}, "name"),
    ({**IRIS, "name": "iris\u202etxt"}, "U+202E"),
    ({**IRIS, "digest": "ab\u202ecd"}, "digest"),
    ({**IRIS, "profile": "p" * 20_000}, "profile"),
])
def test_a_bad_dataset_is_refused_in_mlflows_shape_and_nothing_is_kept(carol_mlflow, dataset, fragment):
    run_id = carol_mlflow.new_run()
    answer = carol_mlflow.post("runs/log-inputs", {"run_id": run_id, "datasets": [{"dataset": dataset}]})
    assert_error(answer, 400, "INVALID_PARAMETER_VALUE", fragment)
    assert carol_mlflow.get("runs/get", run_id=run_id).json()["run"]["inputs"] == {}


def test_model_inputs_name_logged_models_of_the_workspace(carol_mlflow):
    run_id = carol_mlflow.new_run()
    answer = carol_mlflow.post("runs/log-inputs", {"run_id": run_id, "models": [{"model_id": "m-" + "0" * 32}]})
    assert_error(answer, 404, "RESOURCE_DOES_NOT_EXIST", "No logged model")
