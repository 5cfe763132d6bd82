"""Every refusal of the MLflow API is MLflow's JSON (`error_code`, `message`) with the status MLflow gives that code,
so the client's own exception says what to fix; bad input is refused clearly, never a 500."""

from __future__ import annotations

import pytest

from tests.mlflow_api.conftest import API, MlflowCaller, assert_error, now_ms

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
BIDI = "\u202e"


def test_without_a_token_the_answer_says_how_to_send_one(client, workspace):
    assert_error(client.get(API + "experiments/get-by-name", {"experiment_name": "x"}), 401, "UNAUTHENTICATED",
                 "MLFLOW_TRACKING_TOKEN")
    wrong = client.get(API + "runs/get", {"run_id": "1"}, headers={"Authorization": "Bearer stu_nope_nope"})
    assert_error(wrong, 401, "UNAUTHENTICATED")


def test_a_session_is_not_enough(client, cast):
    client.force_login(cast["alice"])
    assert_error(client.get(API + "runs/get", {"run_id": "1"}), 401, "UNAUTHENTICATED")


def test_an_outsider_learns_nothing_of_the_workspace(cast):
    charlie = MlflowCaller(cast["charlie"])
    assert_error(charlie.get("experiments/get-by-name", experiment_name="x"), 404, "RESOURCE_DOES_NOT_EXIST",
                 "No such workspace")
    # even with a body that could not be read: the role is checked first
    assert_error(charlie.post("runs/log-batch", b"{not json"), 404, "RESOURCE_DOES_NOT_EXIST")


def test_a_reader_reads_and_searches_but_cannot_log(cast, carol_mlflow):
    run_id = carol_mlflow.new_run()
    bob = MlflowCaller(cast["bob"])
    assert bob.get("runs/get", run_id=run_id).status_code == 200
    assert bob.post("runs/search", {"experiment_ids": []}).status_code == 200
    denied = bob.post("runs/log-metric", {"run_id": run_id, "key": "loss", "value": 1, "timestamp": now_ms()})
    assert_error(denied, 403, "PERMISSION_DENIED", "Readers cannot change anything")


def test_unknown_routes_and_wrong_methods_answer_in_mlflows_shape(carol_mlflow):
    assert_error(carol_mlflow.get("runs/nonexistent"), 404, "ENDPOINT_NOT_FOUND")
    wrong = carol_mlflow.post("runs/get", {})
    assert_error(wrong, 405, "BAD_REQUEST", "GET")
    assert wrong["Allow"] == "GET"


def test_bodies_that_are_not_json_or_miss_fields_are_named(carol_mlflow):
    assert_error(carol_mlflow.post("runs/log-metric", b"not json"), 400, "INVALID_PARAMETER_VALUE", "not valid JSON")
    assert_error(carol_mlflow.post("runs/log-metric", b"[1, 2]"), 400, "INVALID_PARAMETER_VALUE", "JSON object")
    run_id = carol_mlflow.new_run()
    missing = carol_mlflow.post("runs/log-metric", {"run_id": run_id, "key": "loss", "value": 1})
    assert_error(missing, 400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'timestamp'")
    assert_error(carol_mlflow.get("runs/get"), 400, "INVALID_PARAMETER_VALUE", "run_id")
    assert_error(carol_mlflow.get("runs/get", run_id="f" * 32), 404, "RESOURCE_DOES_NOT_EXIST",
                 f"Run with id={'f' * 32} not found")


def test_numbers_too_large_and_values_that_are_not_numbers_are_refused(carol_mlflow):
    run_id = carol_mlflow.new_run()
    point = {"run_id": run_id, "key": "loss", "timestamp": now_ms(), "step": 0}
    huge = carol_mlflow.post("runs/log-metric", b'{"run_id": "%s", "key": "loss", "value": 1e400, "timestamp": 1}'
                             % run_id.encode())
    assert_error(huge, 400, "INVALID_PARAMETER_VALUE", "not valid JSON")
    for value in (True, "abc", None, [1]):
        assert_error(carol_mlflow.post("runs/log-metric", {**point, "value": value}), 400, "INVALID_PARAMETER_VALUE",
                     "'value'")
    too_far = carol_mlflow.post("runs/log-metric", {**point, "value": 1, "step": 2**53 + 1})
    assert_error(too_far, 400, "INVALID_PARAMETER_VALUE", "'step'", "9007199254740992")
    before_epoch = carol_mlflow.post("runs/log-metric", {**point, "value": 1, "timestamp": -5})
    assert_error(before_epoch, 400, "INVALID_PARAMETER_VALUE", "'timestamp'")


def test_nan_and_infinities_are_kept_and_read_back_as_mlflow_writes_them(carol_mlflow):
    run_id = carol_mlflow.new_run()
    for step, value in enumerate(["NaN", "Infinity", "-Infinity", 2.5]):
        response = carol_mlflow.post("runs/log-metric", {"run_id": run_id, "key": "loss", "value": value,
                                                         "timestamp": now_ms(), "step": step})
        assert response.status_code == 200, response.content
    history = carol_mlflow.get("metrics/get-history", run_id=run_id, metric_key="loss").json()["metrics"]
    assert [point["value"] for point in history] == ["NaN", "Infinity", "-Infinity", 2.5]


def test_overlong_keys_and_values_are_refused_with_their_limits(carol_mlflow):
    run_id = carol_mlflow.new_run()
    long_key = carol_mlflow.post("runs/log-metric", {"run_id": run_id, "key": "k" * 251, "value": 1,
                                                     "timestamp": now_ms()})
    assert_error(long_key, 400, "INVALID_PARAMETER_VALUE", "'key'", "250")
    long_param = carol_mlflow.post("runs/log-parameter", {"run_id": run_id, "key": "p", "value": "v" * 6001})
    assert_error(long_param, 400, "INVALID_PARAMETER_VALUE", "'value'", "6000")
    long_tag = carol_mlflow.post("runs/set-tag", {"run_id": run_id, "key": "team", "value": "v" * 1025})
    assert_error(long_tag, 400, "INVALID_PARAMETER_VALUE", "tag values are at most 1,024 characters")
    too_many = carol_mlflow.post("runs/log-batch", {"run_id": run_id, "metrics": [
        {"key": "loss", "value": 1, "timestamp": 1, "step": i} for i in range(1001)]})
    assert_error(too_many, 400, "INVALID_PARAMETER_VALUE", "'metrics'", "1000")


def test_direction_control_characters_are_refused_wherever_a_name_is_stored(carol_mlflow):
    run_id = carol_mlflow.new_run()
    cases = [
        ("runs/log-parameter", {"run_id": run_id, "key": f"lr{BIDI}", "value": "1"}, "U+202E"),
        ("runs/log-parameter", {"run_id": run_id, "key": "lr", "value": f"0.1{BIDI}"}, "U+202E"),
        ("runs/set-tag", {"run_id": run_id, "key": "team", "value": f"a{BIDI}b"}, "U+202E"),
        ("runs/set-tag", {"run_id": run_id, "key": "mlflow.note.content", "value": f"a{BIDI}b"}, "U+202E"),
        ("runs/update", {"run_id": run_id, "run_name": f"evil{BIDI}txt.py"}, "U+202E"),
        ("runs/log-metric", {"run_id": run_id, "key": f"loss{BIDI}", "value": 1, "timestamp": 1}, "Invalid name"),
        ("experiments/create", {"name": f"exp{BIDI}"}, "U+202E"),
        ("registered-models/create", {"name": f"model{BIDI}"}, "cannot be a model name"),
    ]
    for route, body, fragment in cases:
        assert_error(carol_mlflow.post(route, body), 400, "INVALID_PARAMETER_VALUE", fragment)


def test_names_outside_the_studios_rules_are_refused_saying_the_rule(carol_mlflow):
    assert_error(carol_mlflow.post("experiments/create", {"name": "my experiment"}), 400, "INVALID_PARAMETER_VALUE",
                 "letters, digits, '-', '_' or '.'")
    run_id = carol_mlflow.new_run()
    assert_error(carol_mlflow.post("runs/log-metric", {"run_id": run_id, "key": "naïve", "value": 1, "timestamp": 1}),
                 400, "INVALID_PARAMETER_VALUE", "letters, digits, spaces")


def test_a_parameter_keeps_its_first_value_as_mlflow_says(carol_mlflow):
    run_id = carol_mlflow.new_run()
    assert carol_mlflow.post("runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.01"}).status_code == 200
    assert carol_mlflow.post("runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.01"}).status_code == 200
    changed = carol_mlflow.post("runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.5"})
    assert_error(changed, 400, "INVALID_PARAMETER_VALUE", "Changing param values is not allowed",
                 "value='0.01'", "'0.5'")


def test_existing_names_are_resource_already_exists(carol_mlflow):
    assert carol_mlflow.post("experiments/create", {"name": "digits"}).status_code == 200
    assert_error(carol_mlflow.post("experiments/create", {"name": "digits"}), 400, "RESOURCE_ALREADY_EXISTS")
    assert carol_mlflow.post("registered-models/create", {"name": "digits"}).status_code == 200
    assert_error(carol_mlflow.post("registered-models/create", {"name": "digits"}), 400, "RESOURCE_ALREADY_EXISTS")


def test_bad_searches_and_page_tokens_are_refused_clearly(carol_mlflow):
    search = {"experiment_ids": ["0"]}
    cases = [
        ({"filter": "metrics.loss < 1 or metrics.loss > 2"}, "OR is not supported"),
        ({"filter": "metrics.loss < 'x'"}, "compared with a number"),
        ({"filter": "params.lr > '1'"}, "is text"),
        ({"filter": "attributes.status = 'DONE'"}, "not a run status"),
        ({"filter": "metrics.loss <"}, "Invalid search expression"),
        ({"order_by": ["attributes.colour"]}, "Cannot order runs by"),
        ({"page_token": "garbage"}, "Invalid page_token"),
        ({"max_results": 50_001}, "'max_results'"),
    ]
    for extra, fragment in cases:
        assert_error(carol_mlflow.post("runs/search", {**search, **extra}), 400, "INVALID_PARAMETER_VALUE", fragment)


def test_artifact_paths_cannot_leave_the_run(carol_mlflow):
    run_id = carol_mlflow.new_run()
    root = f"/mlflow/lab/api/2.0/mlflow-artifacts/artifacts/1/{run_id}/artifacts"
    for path in ("../../x", "a/../../b", "a\\b"):
        response = carol_mlflow.client.generic("PUT", f"{root}/{path}", b"x", headers=carol_mlflow.headers())
        assert response.status_code == 400, (path, response.content)
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    missing = carol_mlflow.client.get(f"{root}/nothing.txt", headers=carol_mlflow.headers())
    assert_error(missing, 404, "RESOURCE_DOES_NOT_EXIST")


def test_the_studios_own_runs_are_read_but_not_written(cast, workspace, carol_mlflow):
    from tests.conftest import make_run

    run = make_run(workspace, cast["carol"])
    assert carol_mlflow.get("runs/get", run_id=str(run.pk)).json()["run"]["info"]["run_id"] == str(run.pk)
    refused = carol_mlflow.post("runs/log-metric", {"run_id": str(run.pk), "key": "x", "value": 1, "timestamp": 1})
    assert_error(refused, 400, "INVALID_STATE", "executed by the studio")
