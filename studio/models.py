"""Workspaces, who may do what in them, and where runs execute."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.utils import timezone

NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$",
    "Use 1-255 letters, digits, '-', '_' or '.', starting with a letter or digit.",
)


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    CONTRIBUTOR = "contributor", "Contributor"
    READER = "reader", "Reader"


class WorkspaceQuerySet(models.QuerySet):
    def for_user(self, user) -> WorkspaceQuerySet:
        if not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user)


class Workspace(models.Model):
    name = models.SlugField(
        max_length=64,
        unique=True,
        validators=[RegexValidator(r"^[a-z0-9][a-z0-9-]*$", "Use lowercase letters, digits and '-', starting with a letter or digit.")],
        help_text="Lowercase letters, digits and '-'.",
    )
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = WorkspaceQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def create_with_owner(cls, name: str, owner, description: str = "") -> Workspace:
        """A workspace always starts with its owner and the `local` compute target."""
        with transaction.atomic():
            workspace = cls.objects.create(name=name, description=description)
            Membership.objects.create(workspace=workspace, user=owner, role=Role.OWNER)
            ComputeTarget.objects.create(workspace=workspace, name="local", kind=ComputeTarget.Kind.LOCAL)
        return workspace

    def role_of(self, user) -> str | None:
        if not user.is_authenticated:
            return None
        return self.memberships.filter(user=user).values_list("role", flat=True).first()


class Membership(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="one_membership_per_user")]
        ordering = ["user__username"]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.workspace}"

    @property
    def can_write(self) -> bool:
        return self.role in (Role.OWNER, Role.CONTRIBUTOR)

    @property
    def is_owner(self) -> bool:
        return self.role == Role.OWNER


class ComputeTarget(models.Model):
    """Where a run executes. Each target is served by the Celery queue named by `queue`."""

    class Kind(models.TextChoices):
        LOCAL = "local", "Local process"
        DOCKER = "docker", "Docker engine"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="compute_targets")
    name = models.CharField(max_length=64, validators=[NAME_VALIDATOR])
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.LOCAL)
    python_path = models.CharField(
        max_length=1024,
        blank=True,
        help_text="Interpreter for runs on this target (a user-managed environment). Empty: the worker's own.",
    )
    # Docker targets ------------------------------------------------------------------------------------------------
    docker_url = models.CharField(
        max_length=512, blank=True, help_text="unix:///var/run/docker.sock, tcp://host:2376 (with TLS) or ssh://user@host"
    )
    tls_ca_cert = models.TextField(blank=True, help_text="PEM CA certificate of a tcp:// engine.")
    tls_client_cert = models.TextField(blank=True, help_text="PEM client certificate for a tcp:// engine.")
    tls_client_key_encrypted = models.TextField(blank=True)
    cpu_limit = models.FloatField(null=True, blank=True, help_text="CPU cores a run may use.")
    memory_limit_mb = models.PositiveIntegerField(null=True, blank=True, help_text="Memory a run may use, in MB.")
    gpus = models.CharField(max_length=16, blank=True, help_text="'all', a number of GPUs, or empty for none.")
    shm_size_mb = models.PositiveIntegerField(null=True, blank=True, help_text="Size of /dev/shm in MB.")
    callback_url = models.CharField(
        max_length=512, blank=True, help_text="The studio's URL as containers see it (default: STUDIO_CONTAINER_API_URL)."
    )
    queue = models.CharField(
        max_length=64,
        default="local",
        validators=[NAME_VALIDATOR],
        help_text="The Celery queue whose workers run this target's runs (`studioctl.py worker --queues NAME`).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_target_name")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


LAST_USED_PRECISION = timezone.timedelta(seconds=30)


class ApiToken(models.Model):
    """A personal access token for the REST API (`Authorization: Token <token>`); only its hash is kept."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, user, name: str) -> tuple[ApiToken, str]:
        """A new token and its secret text, which is shown once and never stored."""
        prefix, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=prefix, key_hash=_sha256(secret))
        return token, f"stu_{prefix}_{secret}"

    @classmethod
    def authenticate(cls, text: str):
        """The active user the token belongs to, or None."""
        parts = text.split("_", 2)
        if len(parts) != 3 or parts[0] != "stu":
            return None
        token = cls.objects.select_related("user").filter(prefix=parts[1]).first()
        if token is None or not token.user.is_active or not hmac.compare_digest(token.key_hash, _sha256(parts[2])):
            return None
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
            # The tokens page shows the minute: a client sending a request per metric point (MLflow's log_metric)
            # does not write to the database on every request for it.
            cls.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
