"""Reading endpoints for the pages and the REST API: the JSON of an endpoint and its deployments, an endpoint's
overall state, recent requests, the charts' series (from the gateway's ten-second summaries), instance consoles."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.http import Http404
from django.utils import timezone

from endpoints.instances import LocalInstances
from endpoints.models import Deployment, DeploymentState, Endpoint, Instance, RequestRecord, StatsBucket
from endpoints.reconciler import console_path
from environments.access import find_environment as _find
from environments.models import Environment
from studio import console

BUCKET_SECONDS = 10


def scoring_url(endpoint: Endpoint) -> str:
    return f"{settings.STUDIO_GATEWAY_URL}/endpoints/{endpoint.workspace.name}/{endpoint.name}/score"


def swagger_url(endpoint: Endpoint) -> str:
    return f"{settings.STUDIO_GATEWAY_URL}/endpoints/{endpoint.workspace.name}/{endpoint.name}/swagger.json"


def find_environment(workspace, reference: str) -> Environment | None:
    name, _, version = reference.partition(":")
    if version and (not version.isdigit() or len(version) > 9):
        return None
    try:
        return _find(SimpleNamespace(workspace=workspace), name, int(version) if version else None)
    except Http404:
        return None


def endpoints_of(workspace) -> list[Endpoint]:
    return list(Endpoint.objects.filter(workspace=workspace, deleting=False).select_related("workspace", "created_by"))


def overall_state(deployments: list[Deployment]) -> str:
    """What the list shows for an endpoint: its worst deployment's state (no deployment: "No deployments")."""
    if not deployments:
        return "No deployments"
    order = [DeploymentState.FAILED, DeploymentState.UNHEALTHY, DeploymentState.BUILDING, DeploymentState.STARTING,
             DeploymentState.UPDATING, DeploymentState.DELETING, DeploymentState.HEALTHY]
    states = {d.state for d in deployments}
    return next(str(state) for state in order if state in states)


def requests_last_hour(endpoints: list[Endpoint]) -> dict[int, int]:
    since = timezone.now() - timedelta(hours=1)
    rows = StatsBucket.objects.filter(endpoint__in=endpoints, start__gte=since, mirrored=False).values(
        "endpoint_id").annotate(total=Sum("count"))
    return {row["endpoint_id"]: row["total"] or 0 for row in rows}


def deployments_of(endpoints: list[Endpoint]) -> dict[int, list[Deployment]]:
    found: dict[int, list[Deployment]] = {}
    for deployment in Deployment.objects.filter(endpoint__in=endpoints).select_related(
            "model_version__model", "environment", "compute_target", "endpoint").prefetch_related(
            "instances", "deploymentmodel_set__model_version__model").order_by("name"):
        found.setdefault(deployment.endpoint_id, []).append(deployment)
    return found


def instance_label(instance: Instance) -> str:
    return f"r{instance.revision}-{instance.index}"


def deployment_json(deployment: Deployment) -> dict:
    endpoint = deployment.endpoint
    version = deployment.model_version
    environment = deployment.environment
    return {
        "name": deployment.name, "model": f"{version.model.name}:{version.version}",
        "extra_models": [f"{item.model_version.model.name}:{item.model_version.version}"
                         for item in deployment.deploymentmodel_set.all()],
        "scoring_script": deployment.scoring_name, "scoring_sha256": deployment.scoring_sha256,
        "environment": f"{environment.name}:{environment.version}" if environment else None,
        "compute_target": deployment.compute_target.name, "instance_count": deployment.instance_count,
        "cpu_limit": deployment.cpu_limit, "memory_limit_mb": deployment.memory_limit_mb,
        "request_timeout_ms": deployment.request_timeout_ms,
        "max_concurrent_requests": deployment.max_concurrent_requests, "state": deployment.state,
        "reason": deployment.reason, "revision": deployment.revision, "live_revision": deployment.live_revision,
        "traffic": int(endpoint.traffic.get(deployment.name, 0)), "mirror": int(endpoint.mirror.get(deployment.name, 0)),
        "instances": [{"id": i.pk, "label": instance_label(i), "revision": i.revision, "index": i.index,
                       "state": i.state, "restarts": i.restarts, "started_at": i.started_at}
                      for i in deployment.instances.all()],
        "created_at": deployment.created_at, "updated_at": deployment.updated_at,
    }


def endpoints_json(endpoints: list[Endpoint]) -> list[dict]:
    deployments = deployments_of(endpoints)
    counts = requests_last_hour(endpoints)
    out = []
    for endpoint in endpoints:
        mine = deployments.get(endpoint.pk, [])
        out.append({
            "name": endpoint.name, "description": endpoint.description, "scoring_url": scoring_url(endpoint),
            "swagger_url": swagger_url(endpoint), "auth_mode": "key", "traffic": endpoint.traffic,
            "mirror": endpoint.mirror, "capture_percent": endpoint.capture_percent, "state": overall_state(mine),
            "deployments": [deployment_json(d) for d in mine], "requests_last_hour": counts.get(endpoint.pk, 0),
            "created_at": endpoint.created_at,
            "created_by": endpoint.created_by.username if endpoint.created_by else None,
        })
    return out


def recent_requests(endpoint: Endpoint, *, deployment: str = "", limit: int = 100):
    rows = RequestRecord.objects.filter(endpoint=endpoint).order_by("-at", "-id")
    if deployment:
        rows = rows.filter(deployment=deployment)
    return rows.values("at", "deployment", "instance", "status", "latency_ms", "request_bytes", "response_bytes",
                       "mirrored", "request_id")[:limit]


def stats(endpoint: Endpoint, minutes: int) -> dict:
    """One series per deployment (mirrored traffic apart), each with the bucket starts and, per bucket, requests per
    second, errors and the latency percentiles."""
    since = timezone.now() - timedelta(minutes=minutes)
    series: dict[tuple[str, bool], dict] = {}
    for row in StatsBucket.objects.filter(endpoint=endpoint, start__gte=since).order_by("start").values(
            "deployment", "mirrored", "start", "count", "errors", "p50_ms", "p95_ms", "p99_ms"):
        item = series.setdefault((row["deployment"], row["mirrored"]), {
            "deployment": row["deployment"], "mirrored": row["mirrored"], "start": [], "requests_per_second": [],
            "errors": [], "p50_ms": [], "p95_ms": [], "p99_ms": []})
        item["start"].append(row["start"])
        item["requests_per_second"].append(round(row["count"] / BUCKET_SECONDS, 3))
        item["errors"].append(row["errors"])
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            item[key].append(round(row[key], 3))
    return {"bucket_seconds": BUCKET_SECONDS, "series": [series[key] for key in sorted(series)]}


def totals(endpoint: Endpoint, minutes: int = 60) -> dict:
    since = timezone.now() - timedelta(minutes=minutes)
    found = StatsBucket.objects.filter(endpoint=endpoint, start__gte=since, mirrored=False).aggregate(
        requests=Sum("count"), errors=Sum("errors"))
    return {"requests": found["requests"] or 0, "errors": found["errors"] or 0}


def status_counts(endpoint: Endpoint, minutes: int = 60) -> dict[str, int]:
    since = timezone.now() - timedelta(minutes=minutes)
    rows = RequestRecord.objects.filter(endpoint=endpoint, at__gte=since).aggregate(
        ok=Count("id", filter=Q(status__lt=400)), client=Count("id", filter=Q(status__gte=400, status__lt=500)),
        server=Count("id", filter=Q(status__gte=500)))
    return rows


def instance_log_path(instance: Instance) -> Path:
    if instance.handle.startswith("pid:") or instance.deployment.compute_target.kind != "docker":
        return LocalInstances.log_path(LocalInstances(None), instance)
    return console_path(instance)


def instance_tail(instance: Instance, lines: int = 2000) -> tuple[list[str], bool]:
    return console.tail(instance_log_path(instance), lines)
