"""The routes an unmodified MLflow 3 client uses, per workspace at /mlflow/<workspace>/ (MLFLOW_TRACKING_URI):
thin views over tracking.py, logged_models.py, model_registry.py and artifacts.py. Each is served by `http.route`:
token, role, input and errors are handled there, in MLflow's shapes."""

from __future__ import annotations

from mlflow_api import artifacts, errors, logged_models, model_registry, queries, schemas, search, tracking
from mlflow_api.http import json_response, read_json, read_query, route
from studio.downloads import file_response

# Experiments ---------------------------------------------------------------------------------------------------------


@route("GET", schema=schemas.GetExperimentByName)
def get_experiment_by_name(request, access, payload):
    experiment = tracking.experiment_by_name(access.workspace, payload.experiment_name)
    return json_response({"experiment": tracking.experiment_json(experiment)})


@route("POST", write=True, schema=schemas.CreateExperiment)
def create_experiment(request, access, payload):
    experiment = tracking.create_experiment(access.workspace, request.user, payload.name.strip())
    return json_response({"experiment_id": str(experiment.pk)})


@route("GET", schema=schemas.GetExperiment)
def get_experiment(request, access, payload):
    experiment = tracking.find_experiment(access.workspace, payload.experiment_id)
    return json_response({"experiment": tracking.experiment_json(experiment)})


@route("POST", schema=schemas.SearchExperiments)
def search_experiments(request, access, payload):
    found = queries.search_experiments(access.workspace, payload.filter, payload.order_by)
    items, token = search.page(found, search.read_token(payload.page_token), payload.max_results)
    return json_response(_paged({"experiments": [tracking.experiment_json(item) for item in items]}, token))


def _paged(data: dict, token: str | None) -> dict:
    if token:
        data["next_page_token"] = token
    return data


# Runs ----------------------------------------------------------------------------------------------------------------


@route("POST", write=True, schema=schemas.CreateRun)
def create_run(request, access, payload):
    run = tracking.create_run(access.workspace, request.user, experiment_id=payload.experiment_id,
                              user_id=payload.user_id, run_name=payload.run_name, start_time=payload.start_time,
                              tags=payload.tags)
    return json_response({"run": tracking.run_json(run)})


@route("GET", schema=schemas.GetRun)
def get_run(request, access, payload):
    return json_response({"run": tracking.run_json(tracking.resolve_run(access.workspace, payload.run))})


@route("POST", write=True, schema=schemas.UpdateRun)
def update_run(request, access, payload):
    run = tracking.writable_run(access.workspace, payload.run)
    tracking.update_run(run, status=payload.status, end_time=payload.end_time, run_name=payload.run_name)
    return json_response({"run_info": tracking.run_json(run)["info"]})


@route("POST", write=True, schema=schemas.LogMetric)
def log_metric(request, access, payload):
    tracking.log_metrics(tracking.writable_run(access.workspace, payload.run), [payload.point()])
    return json_response({})


@route("POST", write=True, schema=schemas.LogParam)
def log_parameter(request, access, payload):
    tracking.log_params(tracking.writable_run(access.workspace, payload.run), {payload.key: payload.value})
    return json_response({})


@route("POST", write=True, schema=schemas.SetTag)
def set_tag(request, access, payload):
    tracking.set_tags(tracking.writable_run(access.workspace, payload.run), {payload.key: payload.value})
    return json_response({})


@route("POST", write=True, schema=schemas.DeleteTag)
def delete_tag(request, access, payload):
    tracking.delete_tag(tracking.writable_run(access.workspace, payload.run), payload.key)
    return json_response({})


@route("POST", write=True, schema=schemas.LogBatch)
def log_batch(request, access, payload):
    """Parameters, then tags, then metrics (one append per metric name), as MLflow's server applies a batch."""
    run = tracking.writable_run(access.workspace, payload.run)
    params = {}
    for param in payload.params:
        if params.get(param.key, param.value) != param.value:
            raise errors.invalid(f"Parameter {param.key!r} is given twice with different values.")
        params[param.key] = param.value
    tracking.log_params(run, params)
    if payload.tags:
        tracking.set_tags(run, {tag.key: tag.value for tag in payload.tags})
    if payload.metrics:
        tracking.log_metrics(run, payload.metrics)
    return json_response({})


@route("POST", write=True, schema=schemas.LogOutputs)
def log_outputs(request, access, payload):
    tracking.link_outputs(tracking.writable_run(access.workspace, payload.run), payload.models)
    return json_response({})


@route("POST", write=True, schema=schemas.LogInputs)
def log_inputs(request, access, payload):
    tracking.log_inputs(tracking.writable_run(access.workspace, payload.run), payload.datasets, payload.models)
    return json_response({})


@route("POST", schema=schemas.SearchRuns)
def search_runs(request, access, payload):
    found = queries.search_runs(access.workspace, payload.experiment_ids, payload.filter, payload.order_by)
    runs, token = search.page(found, search.read_token(payload.page_token), payload.max_results)
    return json_response(_paged({"runs": tracking.runs_json(runs)}, token))


@route("GET", schema=schemas.GetMetricHistory)
def get_metric_history(request, access, payload):
    run = tracking.resolve_run(access.workspace, payload.run)
    limit = min(payload.max_results or tracking.MAX_HISTORY_PAGE, tracking.MAX_HISTORY_PAGE)
    points, following = tracking.metric_history(run, payload.metric_key, offset=search.read_token(payload.page_token),
                                                limit=limit)
    return json_response(_paged({"metrics": points}, search.make_token(following) if following else None))


# Logged models -------------------------------------------------------------------------------------------------------


@route("POST", write=True, schema=schemas.CreateLoggedModel)
def create_logged_model(request, access, payload):
    model = logged_models.create(access.workspace, request.user, payload)
    return json_response({"model": logged_models.model_json(model)})


@route("POST", schema=schemas.SearchLoggedModels)
def search_logged_models(request, access, payload):
    found = queries.search_logged_models(access.workspace, payload.experiment_ids, payload.filter)
    models, token = search.page(found, search.read_token(payload.page_token), payload.max_results)
    return json_response(_paged({"models": [logged_models.model_json(model) for model in models]}, token))


@route(("GET", "PATCH"), write=("PATCH",))
def logged_model(request, access, payload, model_id: str):
    """GET the model; PATCH marks it ready (or failed) once the client has uploaded its files."""
    model = logged_models.get(access.workspace, model_id)
    if request.method == "PATCH":
        finalize = schemas.FinalizeLoggedModel.model_validate(read_json(request))
        model = logged_models.finalize(model, finalize.status)
    return json_response({"model": logged_models.model_json(model)})


@route("PATCH", write=True, schema=schemas.SetLoggedModelTags)
def set_logged_model_tags(request, access, payload, model_id: str):
    logged_models.set_tags(logged_models.get(access.workspace, model_id), payload.tags)
    return json_response({})


@route("DELETE", write=True)
def delete_logged_model_tag(request, access, payload, model_id: str, key: str):
    logged_models.delete_tag(logged_models.get(access.workspace, model_id), key)
    return json_response({})


@route("POST", write=True, schema=schemas.LogLoggedModelParams)
def log_logged_model_params(request, access, payload, model_id: str):
    logged_models.log_params(logged_models.get(access.workspace, model_id), payload.params)
    return json_response({})


# The model registry --------------------------------------------------------------------------------------------------


@route("POST", write=True, schema=schemas.CreateRegisteredModel)
def create_registered_model(request, access, payload):
    model = model_registry.create_model(access.workspace, request.user, payload.name, payload.description)
    return json_response({"registered_model": model_registry.model_json(model)})


@route("GET", schema=schemas.NameOnly)
def get_registered_model(request, access, payload):
    return json_response({"registered_model": model_registry.model_json(
        model_registry.get_model(access.workspace, payload.name))})


@route("PATCH", write=True, schema=schemas.UpdateRegisteredModel)
def update_registered_model(request, access, payload):
    model = model_registry.describe(model_registry.get_model(access.workspace, payload.name), payload.description)
    return json_response({"registered_model": model_registry.model_json(model)})


@route("GET", schema=schemas.SearchRegistry)
def search_registered_models(request, access, payload):
    found = queries.search_registered_models(access.workspace, payload.filter, payload.order_by)
    models, token = search.page(found, search.read_token(payload.page_token), min(payload.max_results, 1000))
    return json_response(_paged({"registered_models": [model_registry.model_json(model) for model in models]}, token))


@route("POST", schema=schemas.GetLatestVersions)
def get_latest_versions(request, access, payload):
    versions = model_registry.latest_versions(access.workspace, payload.name, payload.stages)
    return json_response({"model_versions": [model_registry.version_json(version) for version in versions]})


@route(("GET", "POST", "DELETE"), write=("POST", "DELETE"))
def registered_model_alias(request, access, payload):
    """GET: the version an alias points at; POST: point it at a version; DELETE: remove it."""
    if request.method == "GET":
        alias = schemas.Alias.model_validate(read_query(request, schemas.Alias))
        version = model_registry.by_alias(access.workspace, alias.name, alias.alias)
        return json_response({"model_version": model_registry.version_json(version)})
    if request.method == "POST":
        given = schemas.SetAlias.model_validate(read_json(request))
        model_registry.set_alias(access.workspace, request.user, given.name, given.alias, given.version)
    else:
        body = read_json(request) or read_query(request, schemas.Alias)
        given = schemas.Alias.model_validate(body)
        model_registry.delete_alias(access.workspace, request.user, given.name, given.alias)
    return json_response({})


@route("POST", write=True, schema=schemas.CreateModelVersion)
def create_model_version(request, access, payload):
    version = model_registry.create_version(access.workspace, request.user, payload)
    return json_response({"model_version": model_registry.version_json(version)})


@route("GET", schema=schemas.VersionRef)
def get_model_version(request, access, payload):
    version = model_registry.get_version(access.workspace, payload.name, payload.version)
    return json_response({"model_version": model_registry.version_json(version)})


@route("PATCH", write=True, schema=schemas.UpdateModelVersion)
def update_model_version(request, access, payload):
    version = model_registry.describe(model_registry.get_version(access.workspace, payload.name, payload.version),
                                      payload.description)
    return json_response({"model_version": model_registry.version_json(version)})


@route("GET", schema=schemas.SearchRegistry)
def search_model_versions(request, access, payload):
    found = queries.search_model_versions(access.workspace, payload.filter, payload.order_by)
    versions, token = search.page(found, search.read_token(payload.page_token), min(payload.max_results, 10_000))
    return json_response(_paged({"model_versions": [model_registry.version_json(v) for v in versions]}, token))


@route("GET", schema=schemas.VersionRef)
def get_model_version_download_uri(request, access, payload):
    version = model_registry.get_version(access.workspace, payload.name, payload.version)
    return json_response({"artifact_uri": model_registry.download_uri(version)})


@route("POST", write=True, schema=schemas.SetModelVersionTag)
def set_model_version_tag(request, access, payload):
    version = model_registry.get_version(access.workspace, payload.name, payload.version)
    model_registry.set_version_tag(version, payload.key, payload.value)
    return json_response({})


@route("DELETE", write=True, schema=schemas.DeleteModelVersionTag)
def delete_model_version_tag(request, access, payload):
    version = model_registry.get_version(access.workspace, payload.name, payload.version)
    model_registry.delete_version_tag(version, payload.key)
    return json_response({})


# The server -------------------------------------------------------------------------------------------------------


@route("GET")
def server_info(request, access, payload):
    """What the client asks before big transfers (and for its telemetry): no workspaces header, no multipart
    transfers (every file goes in one streamed request), no trace archival, no AI gateway."""
    return json_response({
        "store_type": "studio", "workspaces_enabled": False, "trace_archival_enabled": False,
        "multipart_uploads_enabled": False, "multipart_downloads_enabled": False,
        "presigned_upload_run_id_supported": False, "presigned_upload_model_id_supported": False,
        "features_enabled": {"gateway": False},
    })


# Artifacts -----------------------------------------------------------------------------------------------------------


@route("GET", schema=schemas.ListArtifacts)
def list_artifacts(request, access, payload):
    location = artifacts.locate(access.workspace, payload.path or "")
    return json_response({"files": artifacts.listing(location)})


@route(("GET", "PUT"), write=("PUT",))
def artifact(request, access, payload, artifact_path: str):
    """GET downloads a file (streamed); PUT uploads one (the body is the file, read as it arrives)."""
    location = artifacts.locate(access.workspace, artifact_path)
    if request.method == "PUT":
        artifacts.store(location, request)
        return json_response({})
    handle, name = artifacts.open_file(location)
    return file_response(request, handle, filename=name, as_attachment=False)
