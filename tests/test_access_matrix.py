"""Every URL pattern and every API route, for every kind of visitor and every method, against a declared allow-list.

The allow-list (`ROUTES`) says who may use each route with which methods:

- `public`: anyone; `signed_in`: any signed-in user (not tied to a workspace);
- `member`: members of the workspace (an outsider gets 404: the workspace is not disclosed);
- `writer`: owners and contributors (a reader gets 403); `owner`: owners only;
- `token_owner`: the user whose API token it is (anyone else gets 404);
- `run_token`: the running script's own token (the SDK's routes).

Pages use the session (an anonymous visitor is sent to sign in); API routes a personal token (anonymous: 401, a
session is not enough), and so do the MLflow API's routes (`mlflow:`, the token as MLflow's client sends it, a bearer
token; errors in MLflow's shape). A method a route does not declare gets 405. A route that is not declared fails the test, so a
new route cannot be added without saying who may use it.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from endpoints import services as endpoint_services
from endpoints.models import Instance
from environments.models import EnvironmentImage
from mlflow_api import tracking as mlflow_tracking
from mlflow_api.models import LoggedModel
from models_registry import registry
from runs import metrics, storage, tokens
from runs.models import MetricKind, RunStatus
from studio.models import ApiToken, ComputeTarget, Membership
from tests.conftest import make_run
from tests.environments.conftest import make_env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
R, W, OWN = "member", "writer", "owner"

ROUTES: dict[str, dict[str, str]] = {
    # Pages ---------------------------------------------------------------------------------------------------------
    "home": {"GET": "signed_in"},
    "login": {"GET": "public", "POST": "public"},
    "logout": {"POST": "public"},
    "favicon": {"GET": "public"},
    "accept_invite": {"GET": "public", "POST": "public"},  # the link is the credential; a wrong one is refused (400)
    "password_change": {"GET": "signed_in", "POST": "signed_in"},
    "workspace_list": {"GET": "signed_in", "POST": "signed_in"},
    "api_tokens": {"GET": "signed_in", "POST": "signed_in"},
    "revoke_api_token": {"POST": "token_owner"},
    "dashboard": {"GET": R},
    "members": {"GET": R, "POST": OWN},
    "remove_member": {"POST": OWN},
    "invite_member": {"POST": OWN},
    "renew_invite": {"POST": OWN},
    "compute_list": {"GET": R},
    "compute_new": {"GET": W, "POST": W},
    "compute_edit": {"GET": W, "POST": W},
    "compute_test": {"POST": W},
    "compute_delete": {"POST": W},
    "environment_list": {"GET": R},
    "environment_create": {"GET": R, "POST": W},
    "environment_detail": {"GET": R},
    "environment_edit": {"GET": R, "POST": W},
    "environment_save_as": {"GET": R, "POST": W},
    "environment_version": {"GET": R},
    "environment_version_edit": {"GET": R, "POST": W},
    "environment_version_save_as": {"GET": R, "POST": W},
    "environment_build": {"POST": W},
    "image_detail": {"GET": R},
    "image_rebuild": {"POST": W},
    "image_log": {"GET": R},
    "image_events": {"GET": R},
    "experiment_list": {"GET": R},
    "experiment_detail": {"GET": R},
    "experiment_archive": {"POST": W},
    "compare_runs": {"GET": R},
    "run_submit": {"GET": W, "POST": W},
    "run_detail": {"GET": R},
    "run_cancel": {"POST": W},
    "run_events": {"GET": R},
    "run_log": {"GET": R},
    "run_files_zip": {"GET": R},
    "run_file": {"GET": R},
    "snapshot_file": {"GET": R},
    "snapshot_zip": {"GET": R},
    "run_metrics": {"GET": R},
    "series_data": {"GET": R},
    "run_image": {"GET": R},
    "run_models": {"GET": R},
    "run_register_model": {"POST": W},
    "model_list": {"GET": R},
    "model_upload": {"GET": R, "POST": W},
    "model_detail": {"GET": R},
    "model_alias": {"POST": W},
    "model_archive": {"POST": W},
    "model_version": {"GET": R},
    "model_version_tags": {"POST": W},
    "model_version_delete": {"POST": OWN},
    "model_files_zip": {"GET": R},
    "model_file": {"GET": R},
    "endpoint_list": {"GET": R},
    "endpoint_new": {"GET": W, "POST": W},
    "deploy": {"GET": W, "POST": W},
    "endpoint_detail": {"GET": R},
    "endpoint_keys": {"GET": W},
    "endpoint_regenerate": {"POST": W},
    "endpoint_traffic": {"POST": W},
    "endpoint_capture": {"POST": W},
    "endpoint_test": {"POST": W},
    "endpoint_sample": {"GET": W},
    "endpoint_stats": {"GET": R},
    "endpoint_delete": {"POST": W},
    "instance_log": {"GET": R},
    "instance_events": {"GET": R},
    "deployment_edit": {"GET": W, "POST": W},
    "deployment_delete": {"POST": W},
    "mlflow_home": {"GET": R},  # pages that open the links an MLflow client prints
    "mlflow_run_link": {"GET": R},
    "mlflow_experiment_link": {"GET": R},
    # The REST API (personal tokens) -----------------------------------------------------------------------------------
    "api:api-root": {"GET": "public"},
    "api:openapi-json": {"GET": "public"},
    "api:openapi-view": {"GET": "public"},
    "api:me": {"GET": "signed_in"},
    "api:list_workspaces": {"GET": "signed_in"},
    "api:get_workspace": {"GET": R},
    "api:list_targets": {"GET": R, "POST": W},
    "api:create_target": {"GET": R, "POST": W},
    "api:get_target": {"GET": R, "DELETE": W},
    "api:delete_target": {"GET": R, "DELETE": W},
    "api:test_target": {"POST": W},
    "api:list_experiments": {"GET": R},
    "api:get_experiment": {"GET": R},
    "api:archive_experiment": {"POST": W},
    "api:list_experiment_runs": {"GET": R},
    "api:list_runs": {"GET": R, "POST": W},
    "api:submit_run": {"GET": R, "POST": W},
    "api:get_run": {"GET": R},
    "api:cancel_run": {"POST": W},
    "api:list_children": {"GET": R},
    "api:get_tags": {"GET": R, "PATCH": W},
    "api:change_tags": {"GET": R, "PATCH": W},
    "api:api_run_log": {"GET": R},
    "api:run_events": {"GET": R},
    "api:list_metrics": {"GET": R},
    "api:series_data": {"GET": R},
    "api:list_files": {"GET": R},
    "api:files_zip": {"GET": R},
    "api:run_file": {"GET": R},
    "api:get_snapshot": {"GET": R},
    "api:snapshot_file": {"GET": R},
    "api:snapshot_zip": {"GET": R},
    "api:snapshot_missing": {"POST": W},
    "api:create_snapshot": {"POST": W},
    "api:blob_state": {"GET": W, "PUT": W},  # GET (and HEAD): how much of an upload is held; writers only
    "api:upload_blob": {"GET": W, "PUT": W},
    "api:upload_blobs": {"POST": W},
    "api:list_environments": {"GET": R},
    "api:list_versions": {"GET": R},
    "api:get_version": {"GET": R},
    "api:create_version": {"POST": W},
    "api:build_version": {"POST": W},
    "api:get_image": {"GET": R},
    "api:rebuild_image": {"POST": W},
    "api:image_log": {"GET": R},
    "api:image_events": {"GET": R},
    "api:list_models": {"GET": R},
    "api:get_model": {"GET": R},
    "api:list_model_versions": {"GET": R, "POST": W},
    "api:register_model_version": {"GET": R, "POST": W},
    "api:resolve_model": {"GET": R},
    "api:get_model_version": {"GET": R, "DELETE": OWN},
    "api:delete_model_version": {"GET": R, "DELETE": OWN},
    "api:model_files_zip": {"GET": R},
    "api:model_file": {"GET": R},
    "api:upload_model_version": {"POST": W},
    "api:upload_model_archive": {"POST": W},
    "api:set_model_version_tags": {"PUT": W},
    "api:set_model_alias": {"PUT": W, "DELETE": W},
    "api:remove_model_alias": {"PUT": W, "DELETE": W},
    "api:archive_model": {"POST": W},
    # The SDK's routes (the run's own token) ---------------------------------------------------------------------------
    "api:list_endpoints": {"GET": R, "POST": W},
    "api:create_endpoint": {"GET": R, "POST": W},
    "api:get_endpoint": {"GET": R, "PATCH": W, "DELETE": W},
    "api:update_endpoint": {"GET": R, "PATCH": W, "DELETE": W},
    "api:delete_endpoint": {"GET": R, "PATCH": W, "DELETE": W},
    "api:get_endpoint_keys": {"GET": W},
    "api:regenerate_endpoint_key": {"POST": W},
    "api:set_endpoint_traffic": {"PUT": W},
    "api:list_endpoint_requests": {"GET": R},
    "api:get_endpoint_stats": {"GET": R},
    "api:list_endpoint_events": {"GET": R},
    "api:get_instance_logs": {"GET": R},
    "api:create_deployment": {"POST": W},
    "api:get_deployment": {"GET": R, "PATCH": W, "DELETE": W},
    "api:update_deployment": {"GET": R, "PATCH": W, "DELETE": W},
    "api:delete_deployment": {"GET": R, "PATCH": W, "DELETE": W},
    "api:ingest_metrics": {"POST": "run_token"},
    "api:ingest_entries": {"POST": "run_token"},
    "api:ingest_tags": {"GET": "run_token", "POST": "run_token"},
    "api:set_tags": {"GET": "run_token", "POST": "run_token"},
    "api:ingest_image": {"POST": "run_token"},
    "api:ingest_file": {"POST": "run_token"},
    "api:ingest_children": {"POST": "run_token"},
    "api:ingest_status": {"POST": "run_token"},
    "api:ingest_parameters": {"POST": "run_token"},
    "api:ingest_register_model": {"POST": "run_token"},
    # The MLflow API (personal tokens as MLflow's client sends them); MLflow searches with POST, readers too ------------
    "mlflow:experiments_get_by_name": {"GET": R},
    "mlflow:experiments_create": {"POST": W},
    "mlflow:experiments_get": {"GET": R},
    "mlflow:experiments_search": {"POST": R},
    "mlflow:runs_create": {"POST": W},
    "mlflow:runs_get": {"GET": R},
    "mlflow:runs_update": {"POST": W},
    "mlflow:runs_search": {"POST": R},
    "mlflow:runs_log_metric": {"POST": W},
    "mlflow:runs_log_parameter": {"POST": W},
    "mlflow:runs_set_tag": {"POST": W},
    "mlflow:runs_delete_tag": {"POST": W},
    "mlflow:runs_log_batch": {"POST": W},
    "mlflow:runs_outputs": {"POST": W},
    "mlflow:runs_log_inputs": {"POST": W},
    "mlflow:metrics_get_history": {"GET": R},
    "mlflow:logged_models_create": {"POST": W},
    "mlflow:logged_models_search": {"POST": R},
    "mlflow:logged_model": {"GET": R, "PATCH": W},
    "mlflow:logged_model_tags": {"PATCH": W},
    "mlflow:logged_model_tag_delete": {"DELETE": W},
    "mlflow:logged_model_params": {"POST": W},
    "mlflow:registered_models_create": {"POST": W},
    "mlflow:registered_models_get": {"GET": R},
    "mlflow:registered_models_update": {"PATCH": W},
    "mlflow:registered_models_search": {"GET": R},
    "mlflow:registered_models_latest_versions": {"POST": R},
    "mlflow:registered_models_alias": {"GET": R, "POST": W, "DELETE": W},
    "mlflow:model_versions_create": {"POST": W},
    "mlflow:model_versions_get": {"GET": R},
    "mlflow:model_versions_update": {"PATCH": W},
    "mlflow:model_versions_search": {"GET": R},
    "mlflow:model_versions_download_uri": {"GET": R},
    "mlflow:model_versions_set_tag": {"POST": W},
    "mlflow:model_versions_delete_tag": {"DELETE": W},
    "mlflow:server_info": {"GET": R},
    "mlflow:artifacts_list": {"GET": R},
    "mlflow:artifact": {"GET": R, "PUT": W},
}
TOKEN_ROUTES = ("api:", "mlflow:")  # a personal token, never a session
STAFF_ONLY = "admin:"  # Django's admin: its own staff check, tested once below


def all_patterns():
    """(name, route) of every URL pattern the studio serves."""

    def walk(patterns, prefix: str, namespace: str):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
            elif isinstance(pattern, URLPattern):
                yield f"{namespace}{pattern.name or ''}", prefix + str(pattern.pattern)

    return list(walk(get_resolver().url_patterns, "", ""))


def test_every_route_is_declared():
    names = {name for name, _ in all_patterns() if not name.startswith(STAFF_ONLY)}
    assert names - ROUTES.keys() == set(), "declare who may use these routes in ROUTES"
    assert ROUTES.keys() - names == set(), "these declared routes do not exist any more"


@pytest.fixture
def world(cast, workspace):
    """One of everything a route can name, in workspace `lab`."""
    run = make_run(workspace, cast["carol"], experiment="mnist")
    for to, source in ((RunStatus.PREPARING, RunStatus.QUEUED), (RunStatus.STARTING, RunStatus.PREPARING),
                       (RunStatus.RUNNING, RunStatus.STARTING)):
        run.transition(to, from_states=(source,))
    metrics.append_points(run, "loss", [(0, 1.0, 1.0)])
    series = run.metric_series.get(name="loss")
    image_series = metrics.series_for(run, "roc", MetricKind.IMAGE)
    metrics.append_entries(run, "roc", MetricKind.IMAGE, [{"file": "images/roc.png", "format": "png", "size": 8}])
    (storage.run_dir(run.pk) / "images").mkdir(parents=True)
    (storage.run_dir(run.pk) / "images/roc.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (storage.run_dir(run.pk) / "outputs").mkdir(parents=True)
    (storage.run_dir(run.pk) / "outputs/model.pkl").write_bytes(b"weights")
    env = make_env(workspace, cast["carol"], "torch-env")
    image = EnvironmentImage.objects.create(definition_hash=env.definition_hash)
    target = ComputeTarget.objects.create(workspace=workspace, name="gpu", kind="docker",
                                          docker_url="unix:///nonexistent.sock", queue="docker-gpu")
    model_version = registry.register_from_run(run, cast["carol"], "digits", ["outputs/model.pkl"])
    registry.set_alias(model_version, "production", cast["carol"])
    endpoint = endpoint_services.create_endpoint(workspace, cast["carol"], "digits-api")
    deployment = endpoint_services.create_deployment(
        endpoint, cast["carol"], "blue", model="digits:1", compute_target=workspace.compute_targets.get(name="local"),
        script=("score.py", b"def init():\n    pass\n\ndef run(data):\n    return data\n"))
    instance = Instance.objects.create(deployment=deployment, revision=1, index=0, handle="pid:0", port=None)
    mlflow_run = mlflow_tracking.create_run(workspace, cast["carol"], experiment_id=str(run.experiment_id),
                                            user_id="carol", run_name="logged", start_time=None, tags=[])
    storage.store_upload(mlflow_run.pk, "notes.txt", SimpleUploadedFile("notes.txt", b"notes"))
    logged_model = LoggedModel.objects.create(workspace=workspace, experiment=run.experiment, run=mlflow_run,
                                              name="model", folder="model", tags={"team": "vision"})
    return {
        "mlflow_run": mlflow_run, "logged_model": logged_model,
        "instance": instance,
        "run": run, "run_token": tokens.issue(run), "series": series, "entry": image_series.entries.get(),
        "env": env, "image": image, "target": target,
        "membership": Membership.objects.get(workspace=workspace, user=cast["bob"]),
        "token": ApiToken.issue(cast["alice"], "matrix")[0],
    }


def url_for(name: str, world) -> str:
    """The route's URL for the objects of `world` (workspace `lab`)."""
    run, env = world["run"], world["env"]
    values = {
        "workspace": "lab", "run_id": run.pk, "image_id": world["image"].pk, "target_id": world["target"].pk,
        "membership_id": world["membership"].pk, "token_id": world["token"].pk, "series_id": world["series"].pk,
        "entry_id": world["entry"].pk, "path": "outputs/model.pkl", "version": env.version,
        "file": "model.pkl", "alias": "production", "reference": "digits:1", "deployment": "blue",
        "instance_id": world["instance"].pk, "instance": world["instance"].pk, "sha256": "0" * 64,
        "model_id": world["logged_model"].model_id, "key": "team", "experiment_id": run.experiment_id, "invite": "not-a-valid-link",
        "artifact_path": f"{run.experiment_id}/{world['mlflow_run'].mlflow.run_uuid}/artifacts/notes.txt",
    }
    route = next(route for pattern_name, route in all_patterns() if pattern_name == name)
    kwargs = {key: value for key, value in values.items() if f"<{key}>" in route or f":{key}>" in route}
    if "<name>" in route or ":name>" in route:
        kwargs["name"] = {"environment": env.name, "compute": "gpu", "target": "gpu", "version": env.name,
                          "image": env.name, "model": "digits", "endpoint": "digits-api", "deployment": "digits-api",
                          "instance": "digits-api"}.get(_noun(name), "mnist")
    return reverse(name, kwargs=kwargs)


def _noun(name: str) -> str:
    for noun in ("endpoint", "deployment", "instance", "model", "environment", "version", "target", "compute"):
        if noun in name:
            return noun
    return ""


VISITORS = ("anonymous", "charlie", "bob", "carol", "alice")
ALLOWED = {
    "public": set(VISITORS),
    "signed_in": {"charlie", "bob", "carol", "alice"},
    "member": {"bob", "carol", "alice"},
    "writer": {"carol", "alice"},
    "owner": {"alice"},
    "token_owner": {"alice"},
}


def request(name: str, method: str, visitor: str, world, cast):
    client = Client()
    url = url_for(name, world)
    headers = {}
    if name.startswith(TOKEN_ROUTES):
        if visitor != "anonymous":
            scheme = "Bearer" if name.startswith("mlflow:") else "Token"
            headers["Authorization"] = f"{scheme} {ApiToken.issue(cast[visitor], 'matrix')[1]}"
    elif visitor != "anonymous":
        client.force_login(cast[visitor])
    query = {"path": "train.py"} if name.endswith("snapshot_file") else {}
    if method == "GET":
        return client.get(url, query, headers=headers)
    body = "{}" if name.startswith(TOKEN_ROUTES) else ""
    return client.generic(method, url, body, content_type="application/json", headers=headers)


def expected_denial(name: str, visitor: str, who: str) -> int | None:
    """The status a visitor who may not use the route gets, or None when they may."""
    if visitor in ALLOWED[who]:
        return None
    if visitor == "anonymous":
        return 401 if name.startswith(TOKEN_ROUTES) else 302
    if who in ("member", "writer", "owner") and visitor == "charlie" or who == "token_owner":
        return 404
    return 403


READS = [(name, who) for name, methods in ROUTES.items() for method, who in methods.items()
         if method == "GET" and who != "run_token"]
# What changes something is tried by each visitor on a world of its own (a contributor's delete must not hide the
# route from the owner tried next).
CHANGES = [(name, method, who, visitor) for name, methods in ROUTES.items() for method, who in methods.items()
           if method != "GET" and who != "run_token" for visitor in VISITORS]


@pytest.mark.parametrize(("name", "who"), READS, ids=[name for name, _ in READS])
def test_each_visitor_reads_what_the_allow_list_says(name, who, world, cast):
    for visitor in VISITORS:
        check(name, "GET", who, visitor, world, cast)


@pytest.mark.parametrize(("name", "method", "who", "visitor"), CHANGES,
                         ids=[f"{n}-{m}-{v}" for n, m, _, v in CHANGES])
def test_each_visitor_changes_what_the_allow_list_says(name, method, who, visitor, world, cast):
    check(name, method, who, visitor, world, cast)


def check(name: str, method: str, who: str, visitor: str, world, cast) -> None:
    response = request(name, method, visitor, world, cast)
    denial = expected_denial(name, visitor, who)
    if denial is None:
        assert response.status_code not in (401, 403, 404, 405) and response.status_code < 500, (
            f"{visitor} {method} {name}: {response.status_code} {response.content[:300]!r}"
        )
    else:
        assert response.status_code == denial, f"{visitor} {method} {name}: {response.status_code}"
        if denial == 302:
            assert response.url.startswith(reverse("login"))
    if name.startswith(TOKEN_ROUTES) and response.status_code >= 400:
        assert response["Content-Type"].startswith("application/json"), f"{method} {name}: not JSON"
        assert_error_shape(name, response)


def assert_error_shape(name: str, response) -> None:
    """The REST API's `{"error": ...}`, or MLflow's `{"error_code": ..., "message": ...}` on its routes."""
    if name.startswith("mlflow:"):
        assert response.json()["error_code"] and response.json()["message"]
    else:
        assert response.json()["error"]


WRONG = [(name, method) for name, methods in ROUTES.items() for method in METHODS
         if method not in methods and name != "logout"]


@pytest.mark.parametrize(("name", "method"), WRONG, ids=[f"{n}-{m}" for n, m in WRONG])
def test_a_method_a_route_does_not_take_is_405(name, method, world, cast):
    who = "alice"
    visitor_token = world["run_token"] if ROUTES[name] and "run_token" in ROUTES[name].values() else None
    client = Client()
    headers = {}
    if visitor_token:
        headers["Authorization"] = f"Bearer {visitor_token}"
    elif name.startswith(TOKEN_ROUTES):
        headers["Authorization"] = f"Token {ApiToken.issue(cast[who], 'matrix')[1]}"
    else:
        client.force_login(cast[who])
    response = client.generic(method, url_for(name, world), "{}", content_type="application/json", headers=headers)
    assert response.status_code == 405, f"{method} {name}: {response.status_code}"
    if name.startswith(TOKEN_ROUTES):
        assert_error_shape(name, response)


INGEST = [(name, method) for name, methods in ROUTES.items() for method, who in methods.items() if who == "run_token"]


@pytest.mark.parametrize(("name", "method"), INGEST, ids=[f"{n}-{m}" for n, m in INGEST])
def test_the_sdk_routes_take_only_their_runs_token(name, method, world, cast, workspace):
    other = make_run(workspace, cast["carol"], experiment="mnist")
    for to, source in ((RunStatus.PREPARING, RunStatus.QUEUED), (RunStatus.STARTING, RunStatus.PREPARING),
                       (RunStatus.RUNNING, RunStatus.STARTING)):
        other.transition(to, from_states=(source,))
    visitors = {
        "anonymous": ({}, 401),
        "a personal token": ({"Authorization": f"Token {ApiToken.issue(cast['alice'], 'm')[1]}"}, 401),
        "a personal token as bearer": ({"Authorization": f"Bearer {ApiToken.issue(cast['alice'], 'm')[1]}"}, 401),
        "another run's token": ({"Authorization": f"Bearer {tokens.issue(other)}"}, 403),
        "the run's token": ({"Authorization": f"Bearer {world['run_token']}"}, None),
    }
    for who, (headers, denial) in visitors.items():
        client = Client()
        client.force_login(cast["alice"])  # a session changes nothing
        url = url_for(name, world)
        response = client.generic(method, url, "{}", content_type="application/json", headers=headers)
        if denial is None:
            assert response.status_code not in (401, 403, 404, 405), f"{who}: {response.status_code}"
        else:
            assert response.status_code == denial, f"{who} {method} {name}: {response.status_code}"
            assert response.json()["error"]


def test_the_admin_is_for_staff_only(client, cast):
    client.force_login(cast["alice"])
    response = client.get("/admin/")
    assert response.status_code == 302 and response.url.startswith("/admin/login/")
