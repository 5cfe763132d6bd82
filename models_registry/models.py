"""The model registry: a model is a name in a workspace; each registration adds the next integer version.

A version's files are content-addressed blobs (`studio/blobs.py`, shared with snapshots and run outputs), listed by
`ModelFile` rows; a version never changes files, framework or properties after it is made (tags and description
may change). Aliases (`production`, `staging`, ...) point at one version each, and every move is recorded.

Something that serves a version (a deployment, in the endpoints app) refers to it with `on_delete=PROTECT`, so the
database itself refuses to delete a version in use; `usage_label()` on the referring object names it for the user.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from runs.models import Run
from studio.models import NAME_VALIDATOR, Workspace

ALIAS_VALIDATOR = RegexValidator(
    r"^[a-z][a-z0-9_-]{0,63}$",
    "Use 1-64 lowercase letters, digits, '-' or '_', starting with a letter (e.g. production, staging).",
)
RESERVED_ALIASES = ("latest",)  # resolves to the newest version; never set by hand


class Source(models.TextChoices):
    RUN = "run", "A run's outputs"
    UPLOADED = "uploaded", "Uploaded"


class RegisteredModel(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="registered_models")
    name = models.CharField(max_length=255, validators=[NAME_VALIDATOR])
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    archived = models.BooleanField(default=False)
    # The highest version number ever given (deleted versions keep their numbers), and when the last one came.
    latest_version = models.PositiveIntegerField(default=0)
    last_registered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_model_name")]
        indexes = [models.Index(fields=["workspace", "-last_registered_at", "-id"], name="model_recent")]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    properties = models.JSONField(default=dict, blank=True)  # immutable: set at registration
    framework = models.CharField(max_length=64, default="custom")
    framework_version = models.CharField(max_length=64, blank=True)
    # What detection found, for the version page: estimator class, MLmodel flavors and signature, ONNX opset, ...
    details = models.JSONField(default=dict, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    file_count = models.PositiveIntegerField(default=0)
    source = models.CharField(max_length=16, choices=Source.choices)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.PROTECT, related_name="model_versions")
    # The run's context at registration: experiment, snapshot, environment, metric summary (kept as it was then).
    lineage = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "version"], name="unique_model_version")]
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"{self.model.name}:{self.version}"


class ModelFile(models.Model):
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=1024)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "path"], name="unique_model_file_path")]
        ordering = ["path"]


class ModelAlias(models.Model):
    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField(max_length=64, validators=[ALIAS_VALIDATOR])
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="aliases")
    updated_at = models.DateTimeField()
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "name"], name="unique_model_alias")]
        ordering = ["name"]


class AliasChange(models.Model):
    """One move of an alias: set, moved from one version to another, or removed."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="alias_changes")
    alias = models.CharField(max_length=64)
    from_version = models.PositiveIntegerField(null=True, blank=True)
    to_version = models.PositiveIntegerField(null=True, blank=True)
    at = models.DateTimeField()
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-at", "-id"]
