"""REST routes for environments and their images, with the same roles as the pages: members read, owners and
contributors save versions and start builds.

An environment version never changes once saved: `POST …/environments/{name}/versions` saves the next version (the
first one of a new name). A build starts only when asked (`POST …/{id:version}/build`) or when a run needs the image.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from ninja import Field, Schema, Status
from pydantic import field_validator

from environments import builds
from environments.access import get_environment_for_user, get_image_for_user
from environments.events import image_stream_response
from environments.forms import EnvironmentForm, env_vars_text
from environments.models import Environment, EnvironmentImage
from studio import console
from studio.access import access_for, get_workspace_for_user
from studio.api import ApiError, Error, Id, LogChunk, form_error, token_router
from studio.downloads import file_response
from studio.forms import LogQueryForm, valid_query
from studio.parsing import env_var_problem
from studio.sse import valid_last_event_id

router = token_router(tags=["environments"])
ERRORS = {400: Error, 401: Error, 403: Error, 404: Error}


class ImageOut(Schema):
    id: int
    name: str
    definition_hash: str
    status: str
    build_count: int
    size_bytes: int | None
    failed_step: str
    error: str
    resolved_packages: str
    queued_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    log_url: str
    events_url: str


class EnvironmentOut(Schema):
    name: str
    version: int
    kind: str
    curated: bool
    description: str
    definition_hash: str
    base_image: str
    base_dockerfile: str
    dockerfile_steps: str
    python_packages: str
    conda_spec: str
    interpreter_path: str
    env_vars: dict[str, str]
    registry_address: str
    registry_username: str
    registry_password_stored: bool
    created_at: datetime
    created_by: str | None
    image: ImageOut | None


class EnvironmentIn(Schema):
    """A version's definition, as the environment form takes it. The registry password is write-only."""

    kind: str = Field("system", description="system (the studio installs the packages) or user (an interpreter that "
                                            "already has them).")
    description: str = ""
    base_image: str = ""
    base_dockerfile: str = ""
    dockerfile_steps: str = ""
    python_packages: str = Field("", description="pip requirement lines, one per line.")
    conda_spec: str = Field("", description="A conda environment YAML.")
    interpreter_path: str = ""
    env_vars: dict[str, str] = Field(default_factory=dict, max_length=200)
    registry_address: str = ""
    registry_username: str = ""
    registry_password: str = Field("", description="Stored encrypted; never returned. Empty keeps a stored one.")
    forget_registry_password: bool = False

    @field_validator("env_vars")
    @classmethod
    def _one_line_each(cls, env_vars: dict[str, str]) -> dict[str, str]:
        """Each variable stays itself through the form's KEY=VALUE lines: a valid name, a value without line breaks."""
        for key, value in env_vars.items():
            problem = env_var_problem(key, value)
            if not problem and "".join(value.splitlines()) != value:
                problem = "values cannot hold line breaks."
            if problem:
                raise ValueError(f"variable {key[:60]!r}: {problem}")
        return env_vars


def image_json(workspace: str, image: EnvironmentImage | None) -> dict | None:
    if image is None:
        return None
    return {
        "id": image.pk, "name": image.name, "definition_hash": image.definition_hash, "status": image.status,
        "build_count": image.build_count, "size_bytes": image.size_bytes, "failed_step": image.failed_step,
        "error": image.error, "resolved_packages": image.resolved_packages, "queued_at": image.queued_at,
        "started_at": image.started_at, "ended_at": image.ended_at,
        "log_url": reverse("api:image_log", args=[workspace, image.pk]),
        "events_url": reverse("api:image_events", args=[workspace, image.pk]),
    }


def environment_json(workspace: str, env: Environment, image: EnvironmentImage | None = None) -> dict:
    return {
        "name": env.name, "version": env.version, "kind": env.kind, "curated": env.is_curated,
        "description": env.description, "definition_hash": env.definition_hash, "base_image": env.base_image,
        "base_dockerfile": env.base_dockerfile, "dockerfile_steps": env.dockerfile_steps,
        "python_packages": env.python_packages, "conda_spec": env.conda_spec, "interpreter_path": env.interpreter_path,
        "env_vars": env.env_vars, "registry_address": env.registry_address,
        "registry_username": env.registry_username, "registry_password_stored": bool(env.registry_password_encrypted),
        "created_at": env.created_at, "created_by": env.created_by.username if env.created_by else None,
        "image": image_json(workspace, image if image is not None else env.image()),
    }


@router.get("/workspaces/{workspace}/environments", response={200: list[EnvironmentOut], **ERRORS})
def list_environments(request, workspace: str):
    """The latest version of each of the workspace's environments and of the curated ones."""
    access = get_workspace_for_user(request, workspace)
    envs = list(Environment.objects.visible_to(access.workspace).latest_versions().select_related("created_by"))
    images = {image.definition_hash: image for image in
              EnvironmentImage.objects.filter(definition_hash__in=[env.definition_hash for env in envs])}
    envs.sort(key=lambda env: (env.workspace_id is None, env.name.lower()))
    return [environment_json(workspace, env, images.get(env.definition_hash)) for env in envs]


@router.get("/workspaces/{workspace}/environments/{name}", response={200: list[EnvironmentOut], **ERRORS})
def list_versions(request, workspace: str, name: str):
    """Every version of one environment, newest first."""
    access, env = get_environment_for_user(request, workspace, name)
    return [environment_json(workspace, version) for version in env.history().filter(anonymous=False)]


@router.get("/workspaces/{workspace}/environments/{name}/{id:version}", response={200: EnvironmentOut, **ERRORS})
def get_version(request, workspace: str, name: str, version: Id):
    _, env = get_environment_for_user(request, workspace, name, version)
    return environment_json(workspace, env)


@router.post("/workspaces/{workspace}/environments/{name}/versions", response={201: EnvironmentOut, **ERRORS})
def create_version(request: HttpRequest, workspace: str, name: str, payload: EnvironmentIn):
    """Save the next version of `name` (version 1 of a new environment). Saving builds nothing: a run on a Docker
    target, or the build route, does."""
    access = access_for(request, workspace, write=True)
    source = Environment.objects.filter(workspace=access.workspace, name=name, anonymous=False).order_by("-version").first()
    data = payload.model_dump()
    data["name"] = name
    data["env_vars"] = env_vars_text(payload.env_vars)
    data = {key: value for key, value in data.items() if value not in (False, None)}
    form = EnvironmentForm(data, workspace=access.workspace, mode="edit" if source else "create", source=source)
    if not form.is_valid():
        raise form_error(form)
    with transaction.atomic():
        env = form.environment(request.user).save_new_version()
    return Status(201, environment_json(workspace, env))


@router.post("/workspaces/{workspace}/environments/{name}/{id:version}/build", response={202: ImageOut, **ERRORS})
def build_version(request, workspace: str, name: str, version: Id):
    """Build the image of a version (nothing happens when it is built or building already); 400 for a user-managed
    environment, which has no image."""
    access, env = get_environment_for_user(request, workspace, name, version, write=True)
    if not env.needs_image:
        raise ApiError(400, "A user-managed environment has no image: runs use its interpreter as it is.")
    with transaction.atomic():
        image = builds.ensure_image(env)
    return Status(202, image_json(workspace, image))


@router.get("/workspaces/{workspace}/images/{id:image_id}", response={200: ImageOut, **ERRORS})
def get_image(request, workspace: str, image_id: Id):
    _, image = get_image_for_user(request, workspace, image_id)
    return image_json(workspace, image)


@router.post("/workspaces/{workspace}/images/{id:image_id}/rebuild", response={202: ImageOut, 409: Error, **ERRORS})
def rebuild_image(request, workspace: str, image_id: Id):
    """Build the image again on purpose (resolving unpinned packages anew); 409 while a build is going."""
    _, image = get_image_for_user(request, workspace, image_id, write=True)
    with transaction.atomic():
        if not builds.rebuild(image):
            raise ApiError(409, f"The image is {image.status.lower()} already: wait for the build to end.")
    image.refresh_from_db()
    return Status(202, image_json(workspace, image))


@router.get("/workspaces/{workspace}/images/{id:image_id}/log", response={200: LogChunk, **ERRORS}, url_name="image_log")
def image_log(request, workspace: str, image_id: Id, offset: int | None = None, download: str = ""):
    """The build log: with `offset` (bytes), JSON display lines from there; without, the whole log as text."""
    _, image = get_image_for_user(request, workspace, image_id)
    query = valid_query(LogQueryForm, request)
    path = builds.log_path(image)
    if query["offset"] is not None:
        lines, next_offset = console.chunk(path, query["offset"])
        return {"lines": lines, "next_offset": next_offset, "status": image.status, "final": image.is_final}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=True)
    return file_response(request, open(path, "rb"), filename=f"image-{image.pk}-build.log",
                         as_attachment=query["download"], content_type="text/plain; charset=utf-8")


@router.get("/workspaces/{workspace}/images/{id:image_id}/events", response={200: None, **ERRORS}, url_name="image_events")
def image_events(request, workspace: str, image_id: Id):
    """The build's log lines and status changes, live, as server-sent events."""
    _, image = get_image_for_user(request, workspace, image_id)
    try:
        last_id = valid_last_event_id(request)
    except ValueError as error:
        raise ApiError(400, str(error)) from None
    return image_stream_response(image, last_id)
