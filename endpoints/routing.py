"""What the gateway needs to route scoring requests, read from the database in one go: each endpoint's keys, its
deployments' ready instances and limits, and the traffic and mirror split. Built by the gateway's loader thread (never
in the request path) whenever something changes (`notify`) and every few seconds anyway.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis

from endpoints.models import Deployment, DeploymentState, Endpoint, Instance
from studio.crypto import decrypt
from studio.redis_client import get_redis

logger = logging.getLogger(__name__)
CHANNEL = "studio:endpoints:changed"


@dataclass
class DeploymentRoute:
    name: str
    instances: list[tuple[str, int, str]]  # (host, port, label)
    timeout: float
    max_concurrent: int


@dataclass
class EndpointRoute:
    id: int
    workspace: str
    name: str
    keys: tuple[str, ...]
    deployments: dict[str, DeploymentRoute]
    traffic: list[tuple[str, int]]  # (deployment, percent) with percent > 0 and a ready instance
    mirror: list[tuple[str, int]]
    capture_percent: int = 0
    unrouted: dict[str, str] = field(default_factory=dict)  # deployment -> why it gets nothing (not ready)


def notify() -> None:
    """Tell the gateway to reload now (an old key must fail at once, new instances get traffic at once)."""
    try:
        get_redis().publish(CHANNEL, "changed")
    except redis.RedisError:
        logger.warning("Could not notify the gateway; it reloads within seconds anyway", exc_info=True)


def build_table() -> dict[tuple[str, str], EndpointRoute]:
    table: dict[tuple[str, str], EndpointRoute] = {}
    endpoints = list(Endpoint.objects.filter(deleting=False).select_related("workspace"))
    deployments: dict[int, list[Deployment]] = {}
    for deployment in Deployment.objects.filter(endpoint__in=endpoints).exclude(state=DeploymentState.DELETING):
        deployments.setdefault(deployment.endpoint_id, []).append(deployment)
    ready: dict[int, list[tuple[str, int, str]]] = {}
    live = Instance.objects.filter(deployment__endpoint__in=endpoints, state=Instance.State.READY,
                                   port__isnull=False).select_related("deployment")
    for instance in live:
        if instance.revision == instance.deployment.live_revision:
            ready.setdefault(instance.deployment_id, []).append(
                (instance.host, instance.port, f"{instance.deployment.name}-{instance.index}"))
    for endpoint in endpoints:
        keys = tuple(key for key in (_key(endpoint.primary_key_encrypted), _key(endpoint.secondary_key_encrypted))
                     if key)
        routes = {}
        for deployment in deployments.get(endpoint.pk, []):
            routes[deployment.name] = DeploymentRoute(
                deployment.name, sorted(ready.get(deployment.pk, [])), deployment.request_timeout_ms / 1000,
                deployment.max_concurrent_requests)
        traffic = [(name, int(percent)) for name, percent in sorted(endpoint.traffic.items())
                   if int(percent) > 0 and name in routes]
        mirror = [(name, int(percent)) for name, percent in sorted(endpoint.mirror.items())
                  if int(percent) > 0 and name in routes]
        table[(endpoint.workspace.name, endpoint.name)] = EndpointRoute(
            endpoint.pk, endpoint.workspace.name, endpoint.name, keys, routes, traffic, mirror,
            endpoint.capture_percent)
    return table


def _key(encrypted: str) -> str:
    if not encrypted:
        return ""
    try:
        return decrypt(encrypted)
    except ValueError:  # the secret key changed: nobody can use this key until it is regenerated
        return ""
