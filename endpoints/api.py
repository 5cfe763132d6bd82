"""REST routes of endpoints: everything the pages do. Readers list and read (never keys); contributors and owners
create, deploy, move traffic, regenerate and read keys, and delete. Scoring itself goes through the gateway
(`STUDIO_GATEWAY_URL/endpoints/<workspace>/<endpoint>/score`), not through this API."""

from __future__ import annotations

from datetime import datetime

from ninja import Query, Schema, Status
from pydantic import Field

from endpoints import queries, services
from endpoints.models import Deployment, Endpoint, Instance
from environments.models import Environment
from studio.access import access_for, get_in_workspace
from studio.api import ApiError, Error, token_router
from studio.models import ComputeTarget

router = token_router(tags=["endpoints"])
ERRORS = {400: Error, 401: Error, 403: Error, 404: Error}
WRITE_ERRORS = {**ERRORS, 409: Error, 413: Error}


class DeploymentOut(Schema):
    name: str
    model: str
    extra_models: list[str]
    scoring_script: str
    scoring_sha256: str
    environment: str | None
    compute_target: str
    instance_count: int
    cpu_limit: float | None
    memory_limit_mb: int | None
    request_timeout_ms: int
    max_concurrent_requests: int
    state: str
    reason: str
    revision: int
    live_revision: int
    traffic: int
    mirror: int
    instances: list[dict]
    created_at: datetime
    updated_at: datetime


class EndpointOut(Schema):
    name: str
    description: str
    scoring_url: str
    swagger_url: str
    auth_mode: str
    traffic: dict[str, int]
    mirror: dict[str, int]
    capture_percent: int
    state: str
    deployments: list[DeploymentOut]
    requests_last_hour: int
    created_at: datetime
    created_by: str | None


class EndpointList(Schema):
    endpoints: list[EndpointOut]


class EndpointIn(Schema):
    name: str
    description: str = ""
    capture_percent: int = Field(0, ge=0, le=100, description="Share of requests whose payload is kept.")


class EndpointPatch(Schema):
    description: str | None = None
    capture_percent: int | None = Field(None, ge=0, le=100)


class KeysOut(Schema):
    primary: str
    secondary: str


class RegenerateIn(Schema):
    key: str = Field(description="primary or secondary")


class TrafficIn(Schema):
    traffic: dict[str, int] | None = Field(None, description="Deployment -> whole percent; sums to 100.")
    mirror: dict[str, int] | None = Field(None, description="Deployment -> percent mirrored; at most 50 in all.")


class DeploymentSettings(Schema):
    instance_count: int | None = Field(None, ge=1, le=services.MAX_INSTANCES)
    cpu_limit: float | None = None
    memory_limit_mb: int | None = None
    request_timeout_ms: int | None = Field(None, ge=100, le=services.MAX_TIMEOUT_MS)
    max_concurrent_requests: int | None = Field(None, ge=1, le=services.MAX_CONCURRENT)


class DeploymentIn(DeploymentSettings):
    name: str
    model: str = Field(description="name:version, name@alias or name (the newest version)")
    extra_models: list[str] = Field([], max_length=services.MAX_EXTRA_MODELS)
    scoring_script: str = Field("", description="The script's source (init() and run()); empty for an MLflow model.")
    scoring_script_name: str = "score.py"
    environment: str | None = Field(None, description="name or name:version (curated or this workspace's)")
    compute_target: str = "local"
    traffic: int = Field(0, ge=0, le=100, description="Percent moved to it (the first deployment takes 100).")


class DeploymentPatch(DeploymentSettings):
    model: str | None = None
    extra_models: list[str] | None = Field(None, max_length=services.MAX_EXTRA_MODELS)
    scoring_script: str | None = None
    scoring_script_name: str = "score.py"
    environment: str | None = Field(None, description="name or name:version; \"\" for none")


class RequestOut(Schema):
    at: datetime
    deployment: str
    instance: str
    status: int
    latency_ms: float
    request_bytes: int
    response_bytes: int
    mirrored: bool
    request_id: str


class RequestPage(Schema):
    requests: list[RequestOut]


class StatsOut(Schema):
    bucket_seconds: int
    series: list[dict]


class EventOut(Schema):
    at: datetime
    deployment: str
    by: str | None
    text: str


class LogOut(Schema):
    instance: str
    lines: list[str]
    truncated: bool


def _refused(error: services.EndpointError) -> ApiError:
    return ApiError(error.status, str(error))


def _endpoint(request, workspace: str, name: str, *, write: bool = False):
    return get_in_workspace(request, workspace, Endpoint.objects.filter(deleting=False), write=write,
                            missing=f"No endpoint named {name[:255]!r} in this workspace.", name=name)


def _deployment(endpoint: Endpoint, name: str) -> Deployment:
    found = endpoint.deployments.select_related("model_version__model", "environment", "compute_target").filter(
        name=name).first()
    if found is None:
        raise ApiError(404, f"The endpoint {endpoint.name} has no deployment {name[:255]!r}.")
    return found


def _environment(workspace, reference: str | None) -> Environment | None:
    if not reference:
        return None
    found = queries.find_environment(workspace, reference)
    if found is None:
        raise ApiError(404, f"No environment {reference[:255]!r} (curated or of this workspace).")
    return found


def _target(workspace, name: str) -> ComputeTarget:
    found = ComputeTarget.objects.filter(workspace=workspace, name=name).first()
    if found is None:
        raise ApiError(404, f"No compute target named {name[:255]!r} in this workspace.")
    return found


def _settings(payload: DeploymentSettings) -> dict:
    return {key: value for key in services.SETTINGS if (value := getattr(payload, key)) is not None
            or key in payload.model_fields_set}


# Reading -----------------------------------------------------------------------------------------------------------


@router.get("/workspaces/{workspace}/endpoints", response={200: EndpointList, **ERRORS})
def list_endpoints(request, workspace: str):
    access = access_for(request, workspace)
    return {"endpoints": queries.endpoints_json(queries.endpoints_of(access.workspace))}


@router.get("/workspaces/{workspace}/endpoints/{name}", response={200: EndpointOut, **ERRORS})
def get_endpoint(request, workspace: str, name: str):
    _, endpoint = _endpoint(request, workspace, name)
    return queries.endpoints_json([endpoint])[0]


@router.get("/workspaces/{workspace}/endpoints/{name}/keys", response={200: KeysOut, **ERRORS})
def get_endpoint_keys(request, workspace: str, name: str):
    """The scoring keys (contributors and owners; readers get 403)."""
    _, endpoint = _endpoint(request, workspace, name, write=True)
    return services.keys(endpoint)


@router.get("/workspaces/{workspace}/endpoints/{name}/requests", response={200: RequestPage, **ERRORS})
def list_endpoint_requests(request, workspace: str, name: str, deployment: str = "",
                  limit: int = Query(100, ge=1, le=1000)):
    """The most recent scoring requests, newest first."""
    _, endpoint = _endpoint(request, workspace, name)
    return {"requests": list(queries.recent_requests(endpoint, deployment=deployment, limit=limit))}


@router.get("/workspaces/{workspace}/endpoints/{name}/stats", response={200: StatsOut, **ERRORS})
def get_endpoint_stats(request, workspace: str, name: str, minutes: int = Query(60, ge=1, le=60 * 24 * 30)):
    """Per deployment and ten-second bucket: requests, errors, p50/p95/p99 latency (ms)."""
    _, endpoint = _endpoint(request, workspace, name)
    return queries.stats(endpoint, minutes)


@router.get("/workspaces/{workspace}/endpoints/{name}/events", response={200: list[EventOut], **ERRORS})
def list_endpoint_events(request, workspace: str, name: str, limit: int = Query(100, ge=1, le=1000)):
    """The deployment history, newest first."""
    _, endpoint = _endpoint(request, workspace, name)
    return [{"at": e.at, "deployment": e.deployment, "by": e.by.username if e.by else None, "text": e.text}
            for e in endpoint.events.select_related("by")[:limit]]


@router.get("/workspaces/{workspace}/endpoints/{name}/deployments/{deployment}/instances/{int:instance_id}/logs",
            response={200: LogOut, **ERRORS})
def get_instance_logs(request, workspace: str, name: str, deployment: str, instance_id: int,
                  lines: int = Query(200, ge=1, le=10_000)):
    """The end of one instance's console (what init() and run() printed, tracebacks included)."""
    _, endpoint = _endpoint(request, workspace, name)
    found = Instance.objects.filter(deployment=_deployment(endpoint, deployment), pk=instance_id).first()
    if found is None:
        raise ApiError(404, f"No instance {instance_id} in that deployment.")
    tail, truncated = queries.instance_tail(found, lines)
    return {"instance": queries.instance_label(found), "lines": tail, "truncated": truncated}


# Changing ----------------------------------------------------------------------------------------------------------


@router.post("/workspaces/{workspace}/endpoints", response={201: EndpointOut, **WRITE_ERRORS})
def create_endpoint(request, workspace: str, payload: EndpointIn):
    access = access_for(request, workspace, write=True)
    try:
        endpoint = services.create_endpoint(access.workspace, request.auth, payload.name, payload.description,
                                            payload.capture_percent)
    except services.EndpointError as error:
        raise _refused(error) from None
    return Status(201, queries.endpoints_json([endpoint])[0])


@router.patch("/workspaces/{workspace}/endpoints/{name}", response={200: EndpointOut, **WRITE_ERRORS})
def update_endpoint(request, workspace: str, name: str, payload: EndpointPatch):
    _, endpoint = _endpoint(request, workspace, name, write=True)
    try:
        services.update_endpoint(endpoint, request.auth, description=payload.description,
                                 capture_percent=payload.capture_percent)
    except services.EndpointError as error:
        raise _refused(error) from None
    return queries.endpoints_json([endpoint])[0]


@router.delete("/workspaces/{workspace}/endpoints/{name}", response={200: dict, **WRITE_ERRORS})
def delete_endpoint(request, workspace: str, name: str):
    """Scoring answers 404 at once; the instances stop within seconds."""
    _, endpoint = _endpoint(request, workspace, name, write=True)
    services.delete_endpoint(endpoint, request.auth)
    return {"deleted": endpoint.name}


@router.post("/workspaces/{workspace}/endpoints/{name}/keys/regenerate", response={200: KeysOut, **WRITE_ERRORS})
def regenerate_endpoint_key(request, workspace: str, name: str, payload: RegenerateIn):
    """A new primary or secondary key; the old one fails at once."""
    _, endpoint = _endpoint(request, workspace, name, write=True)
    try:
        services.regenerate_key(endpoint, payload.key, request.auth)
    except services.EndpointError as error:
        raise _refused(error) from None
    return services.keys(endpoint)


@router.put("/workspaces/{workspace}/endpoints/{name}/traffic", response={200: EndpointOut, **WRITE_ERRORS})
def set_endpoint_traffic(request, workspace: str, name: str, payload: TrafficIn):
    _, endpoint = _endpoint(request, workspace, name, write=True)
    try:
        endpoint = services.set_traffic(endpoint, request.auth, traffic=payload.traffic, mirror=payload.mirror)
    except services.EndpointError as error:
        raise _refused(error) from None
    return queries.endpoints_json([endpoint])[0]


@router.post("/workspaces/{workspace}/endpoints/{name}/deployments", response={201: DeploymentOut, **WRITE_ERRORS})
def create_deployment(request, workspace: str, name: str, payload: DeploymentIn):
    """Deploy a model version: the controller builds or finds the environment's image, starts the instances and
    runs init(); poll the deployment until its state is Healthy (or Failed, with the reason)."""
    access, endpoint = _endpoint(request, workspace, name, write=True)
    script = (payload.scoring_script_name, payload.scoring_script.encode()) if payload.scoring_script else None
    try:
        deployment = services.create_deployment(
            endpoint, request.auth, payload.name, model=payload.model, extra_models=payload.extra_models,
            compute_target=_target(access.workspace, payload.compute_target),
            environment=_environment(access.workspace, payload.environment), script=script, traffic=payload.traffic,
            **_settings(payload))
    except services.EndpointError as error:
        raise _refused(error) from None
    return Status(201, queries.deployment_json(deployment))


@router.get("/workspaces/{workspace}/endpoints/{name}/deployments/{deployment}", response={200: DeploymentOut, **ERRORS})
def get_deployment(request, workspace: str, name: str, deployment: str):
    _, endpoint = _endpoint(request, workspace, name)
    return queries.deployment_json(_deployment(endpoint, deployment))


@router.patch("/workspaces/{workspace}/endpoints/{name}/deployments/{deployment}",
              response={200: DeploymentOut, **WRITE_ERRORS})
def update_deployment(request, workspace: str, name: str, deployment: str, payload: DeploymentPatch):
    """Change what it serves: a new revision starts beside the live one and takes its traffic once ready."""
    access, endpoint = _endpoint(request, workspace, name, write=True)
    found = _deployment(endpoint, deployment)
    script = ((payload.scoring_script_name, payload.scoring_script.encode()) if payload.scoring_script is not None
              else None)
    environment = False if "environment" not in payload.model_fields_set else _environment(
        access.workspace, payload.environment)
    try:
        updated = services.update_deployment(found, request.auth, model=payload.model, environment=environment,
                                             script=script, extra_models=payload.extra_models, **_settings(payload))
    except services.EndpointError as error:
        raise _refused(error) from None
    return queries.deployment_json(updated)


@router.delete("/workspaces/{workspace}/endpoints/{name}/deployments/{deployment}",
               response={200: dict, **WRITE_ERRORS})
def delete_deployment(request, workspace: str, name: str, deployment: str):
    _, endpoint = _endpoint(request, workspace, name, write=True)
    found = _deployment(endpoint, deployment)
    try:
        services.delete_deployment(found, request.auth)
    except services.EndpointError as error:
        raise _refused(error) from None
    return {"deleted": found.name}
