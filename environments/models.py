"""Environment definitions (versioned, immutable once saved) and the images built from them."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models import Max, Q

from environments import definition as definitions
from studio.crypto import decrypt, encrypt
from studio.models import Workspace

ENV_NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$", "Use 1-255 letters, digits, '-', '_' or '.', starting with a letter or digit."
)
CURATED_PREFIX = "Studio-"


def is_reserved_name(name: str) -> bool:
    """Names of curated environments: no workspace may use them."""
    return name.lower().startswith(CURATED_PREFIX.lower())


class EnvironmentKind(models.TextChoices):
    USER_MANAGED = "user", "User-managed (the interpreter already has what is needed)"
    SYSTEM_MANAGED = "system", "System-managed (the studio installs the packages)"
    CURATED = "curated", "Curated (ships with the studio)"


class EnvironmentQuerySet(models.QuerySet):
    def visible_to(self, workspace: Workspace) -> EnvironmentQuerySet:
        """The workspace's own named environments and the curated ones (anonymous ones are never listed)."""
        return self.filter(Q(workspace=workspace) | Q(workspace__isnull=True), anonymous=False)

    def latest_versions(self) -> EnvironmentQuerySet:
        newest = self.values("workspace", "name").annotate(v=Max("version"))
        condition = Q(pk__in=[])
        for row in newest:
            condition |= Q(workspace=row["workspace"], name=row["name"], version=row["v"])
        return self.filter(condition)


class Environment(models.Model):
    workspace = models.ForeignKey(Workspace, null=True, blank=True, on_delete=models.CASCADE, related_name="environments")
    name = models.CharField(max_length=255, validators=[ENV_NAME_VALIDATOR])
    version = models.PositiveIntegerField()
    kind = models.CharField(max_length=8, choices=EnvironmentKind.choices)
    description = models.TextField(blank=True)
    anonymous = models.BooleanField(default=False, help_text="Made for one run's inline packages; found by its hash.")

    base_image = models.CharField(max_length=512, blank=True)
    base_dockerfile = models.TextField(blank=True, help_text="A full base Dockerfile instead of a base image.")
    dockerfile_steps = models.TextField(blank=True)
    python_packages = models.TextField(blank=True, help_text="pip requirements, one per line; order matters.")
    conda_spec = models.TextField(blank=True, help_text="A conda environment YAML (channels, dependencies, pip).")
    interpreter_path = models.CharField(max_length=1024, blank=True, help_text="User-managed: the Python to run.")
    env_vars = models.JSONField(default=dict, blank=True)

    registry_address = models.CharField(max_length=255, blank=True)
    registry_username = models.CharField(max_length=255, blank=True)
    registry_password_encrypted = models.TextField(blank=True)

    definition_hash = models.CharField(max_length=64, db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = EnvironmentQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name", "version"], name="unique_environment_version"),
            models.UniqueConstraint(
                fields=["name", "version"], condition=Q(workspace__isnull=True), name="unique_curated_version"
            ),
        ]
        ordering = ["name", "-version"]

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"

    # The definition -------------------------------------------------------------------------------------------
    def definition(self) -> definitions.Definition:
        base = self.base_image.strip() or (settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE if not self.base_dockerfile.strip() else "")
        return definitions.Definition(
            base_image=base,
            base_dockerfile=self.base_dockerfile,
            dockerfile_steps=self.dockerfile_steps,
            python_packages=tuple(definitions.package_lines(self.python_packages)),
            conda=definitions.parse_conda(self.conda_spec),
        )

    @property
    def needs_image(self) -> bool:
        return self.kind != EnvironmentKind.USER_MANAGED

    @property
    def image_name(self) -> str:
        return definitions.image_name(self.definition_hash)

    def image(self) -> EnvironmentImage | None:
        """The image of this definition, once asked for (None for user-managed environments)."""
        if not self.needs_image:
            return None
        return EnvironmentImage.objects.filter(definition_hash=self.definition_hash).first()

    @property
    def is_curated(self) -> bool:
        return self.kind == EnvironmentKind.CURATED

    # Credentials: stored encrypted, never shown again -------------------------------------------------------------
    def set_registry_password(self, password: str) -> None:
        self.registry_password_encrypted = encrypt(password) if password else ""

    def registry_auth(self) -> dict | None:
        if not self.registry_username:
            return None
        return {
            "username": self.registry_username,
            "password": decrypt(self.registry_password_encrypted),
            "registry": self.registry_address or None,
        }

    # Versions -----------------------------------------------------------------------------------------------------
    def save_new_version(self) -> Environment:
        """Save as the next version of its name (a saved version never changes)."""
        if self.pk is not None:
            raise ValueError("A saved environment version never changes: save a copy as a new version.")
        self.definition_hash = self.definition().hash()
        with transaction.atomic():
            latest = (
                Environment.objects.select_for_update()
                .filter(workspace=self.workspace, name=self.name)
                .aggregate(v=Max("version"))["v"]
            )
            self.version = (latest or 0) + 1
            self.save()
        return self

    @classmethod
    def anonymous_for(cls, workspace: Workspace, packages: str, user) -> Environment:
        """The workspace's unlisted environment for a run's inline packages, found again by its hash."""
        candidate = cls(workspace=workspace, kind=EnvironmentKind.SYSTEM_MANAGED, anonymous=True,
                        python_packages=packages, created_by=user)
        definition_hash = candidate.definition().hash()
        existing = cls.objects.filter(workspace=workspace, anonymous=True, definition_hash=definition_hash).first()
        if existing is not None:
            return existing
        candidate.name = f"anonymous-{definition_hash[:16]}"
        candidate.base_image = settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE
        return candidate.save_new_version()

    def history(self) -> EnvironmentQuerySet:
        return Environment.objects.filter(workspace=self.workspace, name=self.name).order_by("-version")


class BuildStatus(models.TextChoices):
    QUEUED = "Queued", "Queued"
    BUILDING = "Building", "Building"
    SUCCEEDED = "Succeeded", "Succeeded"
    FAILED = "Failed", "Failed"


class EnvironmentImage(models.Model):
    """The image of one definition hash, shared by every environment version with that hash."""

    definition_hash = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=BuildStatus.choices, default=BuildStatus.QUEUED)
    dockerfile = models.TextField(blank=True)
    image_id = models.CharField(max_length=128, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    image_created = models.CharField(max_length=64, blank=True)
    resolved_packages = models.TextField(blank=True, help_text="pip freeze of the built image.")
    failed_step = models.TextField(blank=True)
    error = models.TextField(blank=True)
    build_count = models.PositiveIntegerField(default=0)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True)

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return definitions.image_name(self.definition_hash)

    @property
    def is_final(self) -> bool:
        return self.status in (BuildStatus.SUCCEEDED, BuildStatus.FAILED)

    def environments(self):
        return Environment.objects.filter(definition_hash=self.definition_hash).select_related("workspace")

    def transition(self, to: str, *, from_states, **fields) -> bool:
        changed = EnvironmentImage.objects.filter(pk=self.pk, status__in=list(from_states)).update(status=to, **fields)
        if changed:
            self.status = to
            for key, value in fields.items():
                setattr(self, key, value)
        return bool(changed)
