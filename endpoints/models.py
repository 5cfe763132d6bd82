"""Endpoints serve registered model versions over HTTP.

An endpoint is a name in a workspace with two keys (stored encrypted), a traffic split over its deployments (whole
percent, summing to 100) and mirror percentages (at most 50 in total; mirrored answers are logged and discarded).
A deployment is a model version (and possibly more), a scoring script, an environment, a compute target and its
instances; each change makes a new revision whose instances replace the old ones once ready.

A deployment refers to the versions it serves with `on_delete=PROTECT`: while it exists, the database refuses to
delete them (the registry names the deployment in its refusal through `usage_label`).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from environments.models import Environment
from models_registry.models import ModelVersion
from studio.models import NAME_VALIDATOR, ComputeTarget, Workspace

MAX_MIRROR_PERCENT = 50


class DeploymentState(models.TextChoices):
    BUILDING = "Building", "Building"
    STARTING = "Starting", "Starting"
    HEALTHY = "Healthy", "Healthy"
    UNHEALTHY = "Unhealthy", "Unhealthy"
    UPDATING = "Updating", "Updating"
    FAILED = "Failed", "Failed"
    DELETING = "Deleting", "Deleting"


class Endpoint(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="endpoints")
    name = models.CharField(max_length=255, validators=[NAME_VALIDATOR])
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    primary_key_encrypted = models.TextField(blank=True)
    secondary_key_encrypted = models.TextField(blank=True)
    traffic = models.JSONField(default=dict, blank=True)  # {deployment name: percent}
    mirror = models.JSONField(default=dict, blank=True)  # {deployment name: percent}
    capture_percent = models.PositiveSmallIntegerField(default=0)  # payloads kept for this share of requests
    deleting = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_endpoint_name")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Deployment(models.Model):
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deployments")
    name = models.CharField(max_length=255, validators=[NAME_VALIDATOR])
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    extra_models = models.ManyToManyField(ModelVersion, through="DeploymentModel", related_name="+", blank=True)
    scoring_name = models.CharField(max_length=255, blank=True)  # "" for an MLflow model served as it is
    scoring_source = models.TextField(blank=True)  # the script itself (at most 1 MiB of UTF-8)
    scoring_sha256 = models.CharField(max_length=64, blank=True)  # its hash: what changed, and what the page shows
    environment = models.ForeignKey(Environment, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    compute_target = models.ForeignKey(ComputeTarget, on_delete=models.PROTECT, related_name="deployments")
    instance_count = models.PositiveSmallIntegerField(default=1)
    cpu_limit = models.FloatField(null=True, blank=True)
    memory_limit_mb = models.PositiveIntegerField(null=True, blank=True)
    request_timeout_ms = models.PositiveIntegerField(default=5000)
    max_concurrent_requests = models.PositiveSmallIntegerField(default=4)  # per instance; more waiting get 429
    state = models.CharField(max_length=16, choices=DeploymentState.choices, default=DeploymentState.BUILDING)
    reason = models.TextField(blank=True)  # why it failed (init's traceback), or what it waits for
    revision = models.PositiveIntegerField(default=1)  # bumped by each change; its instances serve once ready
    live_revision = models.PositiveIntegerField(default=0)  # the revision the gateway sends traffic to
    failed_revision = models.PositiveIntegerField(default=0)  # a revision that failed is not tried again
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["endpoint", "name"], name="unique_deployment_name")]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.endpoint.name}/{self.name}"

    def usage_label(self) -> str:
        return f"deployment {self.name} of endpoint {self.endpoint.name}"


class DeploymentModel(models.Model):
    """A further model version a deployment serves (its scoring script finds it under AZUREML_MODEL_DIR)."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="extra_deployments")

    def usage_label(self) -> str:
        return self.deployment.usage_label()


class Instance(models.Model):
    """One serving process of a deployment's revision: a container (Docker targets) or a local process."""

    class State(models.TextChoices):
        STARTING = "Starting", "Starting"
        READY = "Ready", "Ready"
        DRAINING = "Draining", "Draining"
        DEAD = "Dead", "Dead"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="instances")
    revision = models.PositiveIntegerField()
    index = models.PositiveSmallIntegerField()
    handle = models.CharField(max_length=255)  # container name, or "pid:<n>"
    host = models.CharField(max_length=255, default="127.0.0.1")
    port = models.PositiveIntegerField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.STARTING)
    restarts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)  # a dead instance starts again then (back-off)
    drain_until = models.DateTimeField(null=True, blank=True)  # a replaced instance is removed after this
    last_error = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["deployment", "revision", "index"], name="unique_instance")]
        ordering = ["revision", "index"]

    @property
    def stream_key(self) -> str:
        return f"studio:instance:{self.pk}:console"


class DeploymentEvent(models.Model):
    """The deployment history: created, updated (what changed), traffic moved, failed, deleted."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="events")
    deployment = models.CharField(max_length=255, blank=True)
    at = models.DateTimeField(auto_now_add=True)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    text = models.CharField(max_length=2000)

    class Meta:
        ordering = ["-at", "-id"]


class RequestRecord(models.Model):
    """One scoring request as the gateway saw it (kept STUDIO_ENDPOINT_REQUEST_DAYS days)."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="requests")
    deployment = models.CharField(max_length=255, blank=True)
    instance = models.CharField(max_length=255, blank=True)
    at = models.DateTimeField(db_index=True)
    status = models.PositiveSmallIntegerField()
    latency_ms = models.FloatField()
    request_bytes = models.PositiveIntegerField(default=0)
    response_bytes = models.PositiveIntegerField(default=0)
    mirrored = models.BooleanField(default=False)
    request_id = models.CharField(max_length=64, blank=True)
    payload = models.TextField(blank=True)  # captured request body (when payload capture samples it)

    class Meta:
        indexes = [models.Index(fields=["endpoint", "-at"], name="request_recent")]


class StatsBucket(models.Model):
    """Ten seconds of one deployment's traffic, summarised by the gateway (the charts read these)."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="stats")
    deployment = models.CharField(max_length=255, blank=True)
    mirrored = models.BooleanField(default=False)
    start = models.DateTimeField()
    count = models.PositiveIntegerField()
    errors = models.PositiveIntegerField()  # status >= 500 or the gateway's own 429/504
    p50_ms = models.FloatField()
    p95_ms = models.FloatField()
    p99_ms = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["endpoint", "start"], name="stats_window")]
