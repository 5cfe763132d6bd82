"""Endpoints serve registered model versions over HTTP. A deployment refers to the version it serves with
`on_delete=PROTECT`: while it exists, the database refuses to delete that version (the registry names the deployment
in its refusal through `usage_label`)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from models_registry.models import ModelVersion
from studio.models import NAME_VALIDATOR, Workspace


class Endpoint(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="endpoints")
    name = models.CharField(max_length=255, validators=[NAME_VALIDATOR])
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_endpoint_name")]

    def __str__(self) -> str:
        return self.name


class Deployment(models.Model):
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deployments")
    name = models.CharField(max_length=255, validators=[NAME_VALIDATOR])
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["endpoint", "name"], name="unique_deployment_name")]

    def __str__(self) -> str:
        return f"{self.endpoint.name}/{self.name}"

    def usage_label(self) -> str:
        return f"deployment {self.name} of endpoint {self.endpoint.name}"
