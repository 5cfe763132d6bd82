"""Fetching environments and images for a user (pages and API routes; see `studio/access.py`).

A workspace sees its own environments and the curated ones; an image only when one of those uses it.
"""

from __future__ import annotations

from django.db.models import Q
from django.http import Http404, HttpRequest

from environments.models import Environment, EnvironmentImage, is_reserved_name
from studio.access import Access, access_for


def visible(access: Access) -> Q:
    return Q(workspace=access.workspace) | Q(workspace__isnull=True)


def find_environment(access: Access, name: str, version: int | None = None) -> Environment:
    """A named version (the latest when `version` is None) of the workspace's environments or the curated ones."""
    own = Environment.objects.filter(workspace=access.workspace, name=name, anonymous=False)
    curated = Environment.objects.filter(workspace__isnull=True, name=name, anonymous=False)
    first, second = (curated, own) if is_reserved_name(name) else (own, curated)
    versions = first if first.exists() else second
    versions = versions.select_related("created_by", "workspace")
    env = versions.order_by("-version").first() if version is None else versions.filter(version=version).first()
    if env is None:
        raise Http404(f"No environment {name[:255]}{'' if version is None else f':{version}'} in this workspace.")
    return env


def get_environment_for_user(
    request: HttpRequest, workspace: str, name: str, version: int | None = None, *, write: bool = False
) -> tuple[Access, Environment]:
    access = access_for(request, workspace, write=write)
    return access, find_environment(access, name, version)


def versions_using(access: Access, definition_hash: str):
    """The named environment versions of this workspace and the curated ones with this definition."""
    return (
        Environment.objects.filter(visible(access), definition_hash=definition_hash, anonymous=False)
        .select_related("workspace", "created_by")
        .order_by("workspace_id", "name", "-version")
    )


def get_image_for_user(request, workspace: str, image_id: int, *, write: bool = False) -> tuple[Access, EnvironmentImage]:
    """The image, when an environment of the workspace (or a curated one) uses it; else 404 as if it did not exist."""
    access = access_for(request, workspace, write=write)
    image = EnvironmentImage.objects.filter(pk=image_id).first()
    if image is None or not Environment.objects.filter(visible(access), definition_hash=image.definition_hash).exists():
        raise Http404("No such image.")
    return access, image
