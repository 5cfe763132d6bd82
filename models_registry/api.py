"""REST routes of the model registry (`router`, personal tokens) and registration from inside a run (`run_router`,
the run's own token, for `run.register_model` in the SDK).

Three ways to register a version: from a run's outputs (JSON: the run and the paths under outputs/), from uploaded
files (multipart: several files or one archive), or from an archive streamed as the request body (a tar, plain or
compressed, read member by member as it arrives: a large model is written once and never held in memory).
"""

from __future__ import annotations

import json
from datetime import datetime

from ninja import File, Form, Query, Router, Schema, Status
from ninja.files import UploadedFile
from pydantic import Field

from models_registry import queries, registry, uploads
from models_registry.forms import PAGE_SIZE, ModelListQuery
from models_registry.models import ModelVersion, RegisteredModel
from runs.api import RunTokenAuth
from runs.models import Run
from runs.snapshots import SnapshotError
from studio import blobs
from studio.access import access_for, get_in_workspace
from studio.api import ApiError, Error, Id, form_error, token_router
from studio.downloads import ZipMember, file_response, zip_response

router = token_router(tags=["models"])
run_router = Router(auth=RunTokenAuth(), tags=["ingest (run token)"])
ERRORS = {400: Error, 401: Error, 403: Error, 404: Error}
WRITE_ERRORS = {**ERRORS, 409: Error}
ARCHIVE_TYPES = ("application/x-tar", "application/gzip", "application/x-gzip", "application/x-bzip2",
                 "application/x-xz", "application/octet-stream")


class AliasOut(Schema):
    name: str
    version: int
    updated_at: datetime
    updated_by: str | None


class ModelOut(Schema):
    name: str
    description: str
    archived: bool
    latest_version: int | None
    framework: str | None
    tags: dict[str, str]
    aliases: dict[str, int]
    created_at: datetime
    last_registered_at: datetime | None


class ModelPage(Schema):
    models: list[ModelOut]
    next_after: str = Field(description="Pass as `after` for the next page; empty on the last page.")


class FileOut(Schema):
    path: str
    size: int
    sha256: str


class VersionOut(Schema):
    model: str
    version: int
    description: str
    tags: dict[str, str]
    properties: dict[str, str]
    framework: str
    framework_version: str
    details: dict
    size_bytes: int
    file_count: int
    source: str
    run: int | None
    lineage: dict
    aliases: list[str]
    deployments: list[str]
    created_at: datetime
    created_by: str | None


class VersionDetailOut(VersionOut):
    files: list[FileOut]


class VersionPage(Schema):
    versions: list[VersionOut]
    next_before: int | None


class OutputsIn(Schema):
    """A version made of a run's stored outputs, and its fields."""

    paths: list[str] = Field(max_length=1000, description="Files or folders under outputs/, e.g. outputs/model.pkl")
    description: str = ""
    tags: dict[str, str | None] = {}
    properties: dict[str, str | None] = {}
    framework: str = Field("", description="Empty: detected from the files.")
    framework_version: str = ""


class FromRunIn(OutputsIn):
    run_id: int


class RunRegisterIn(OutputsIn):
    name: str


class AliasIn(Schema):
    version: int = Field(ge=1, le=2**31)


class TagsIn(Schema):
    tags: dict[str, str | None]


class ArchiveIn(Schema):
    archived: bool


class Deleted(Schema):
    deleted: str
    freed_bytes: int


def _user_name(user) -> str | None:
    return user.username if user is not None else None


def _version_json(version: ModelVersion, *, files: bool = False) -> dict:
    data = {
        "model": version.model.name, "version": version.version, "description": version.description,
        "tags": version.tags, "properties": version.properties, "framework": version.framework,
        "framework_version": version.framework_version, "details": version.details, "size_bytes": version.size_bytes,
        "file_count": version.file_count, "source": version.source, "run": version.run_id, "lineage": version.lineage,
        "aliases": sorted(version.aliases.values_list("name", flat=True)),
        "deployments": [item.usage_label() for item in version.deployments.select_related("endpoint")],
        "created_at": version.created_at, "created_by": _user_name(version.created_by),
    }
    if files:
        data["files"] = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in version.files.all()]
    return data


def _refused(error: Exception) -> ApiError:
    if isinstance(error, registry.RegistryError):
        return ApiError(error.status, str(error))
    return ApiError(400, str(error))


def _model(request, workspace: str, name: str, *, write: bool = False, owner: bool = False):
    return get_in_workspace(request, workspace, RegisteredModel, write=write, owner=owner,
                            missing=f"No model named {name[:255]!r} in this workspace.", name=name)


def _version(request, workspace: str, name: str, version: int, *, write: bool = False, owner: bool = False):
    access, model = _model(request, workspace, name, write=write, owner=owner)
    found = ModelVersion.objects.filter(model=model, version=version).select_related("model", "created_by").first()
    if found is None:
        raise ApiError(404, f"The model {model.name} has no version {version}.")
    return access, found


# Reading -----------------------------------------------------------------------------------------------------------


@router.get("/workspaces/{workspace}/models", response={200: ModelPage, **ERRORS})
def list_models(request, workspace: str, q: str = "", tag: str = "", framework: str = "", alias: str = "",
                archived: bool = False, after: str = ""):
    """Models of the workspace, most recently registered first (`after` pages on); filter by name (`q`, contains),
    `tag` (`key` or `key=value`, on any version), `framework`, `alias`."""
    access = access_for(request, workspace)
    form = ModelListQuery({"q": q, "tag": tag, "framework": framework, "alias": alias,
                           "archived": "on" if archived else "", "after": after})
    if not form.is_valid():
        raise form_error(form)
    rows, next_after = queries.model_page(access.workspace, form.cleaned_data, PAGE_SIZE)
    return {"models": [{
        "name": row.name, "description": row.description, "archived": row.archived,
        "latest_version": row.latest_number, "framework": row.latest_framework, "tags": row.latest_tags or {},
        "aliases": dict(row.alias_list), "created_at": row.created_at, "last_registered_at": row.last_registered_at,
    } for row in rows], "next_after": next_after}


@router.get("/workspaces/{workspace}/models/{name}", response={200: ModelOut, **ERRORS})
def get_model(request, workspace: str, name: str):
    _, model = _model(request, workspace, name)
    newest = model.versions.order_by("-version").first()
    return {
        "name": model.name, "description": model.description, "archived": model.archived,
        "latest_version": newest.version if newest else None, "framework": newest.framework if newest else None,
        "tags": newest.tags if newest else {}, "created_at": model.created_at,
        "aliases": {a.name: a.version.version for a in model.aliases.select_related("version")},
        "last_registered_at": model.last_registered_at,
    }


@router.get("/workspaces/{workspace}/models/{name}/versions", response={200: VersionPage, **ERRORS})
def list_model_versions(request, workspace: str, name: str, before: int | None = Query(None, ge=1, le=2**31)):
    _, model = _model(request, workspace, name)
    rows, next_before = queries.version_page(model, before, PAGE_SIZE)
    return {"versions": [_version_json(row) for row in rows], "next_before": next_before}


@router.get("/workspaces/{workspace}/model-versions/{reference}", response={200: VersionDetailOut, **ERRORS})
def resolve_model(request, workspace: str, reference: str):
    """One version by reference: `name:3`, `name@production`, `name` or `name:latest` (the newest)."""
    access = access_for(request, workspace)
    try:
        return _version_json(registry.resolve(access.workspace, reference), files=True)
    except registry.RegistryError as error:
        raise _refused(error) from None


@router.get("/workspaces/{workspace}/models/{name}/versions/{int:version}", response={200: VersionDetailOut, **ERRORS})
def get_model_version(request, workspace: str, name: str, version: int):
    _, found = _version(request, workspace, name, version)
    return _version_json(found, files=True)


@router.get("/workspaces/{workspace}/models/{name}/versions/{int:version}/files.zip", response={200: None, **ERRORS})
def model_files_zip(request, workspace: str, name: str, version: int):
    _, found = _version(request, workspace, name, version)
    members = [ZipMember(item.path, blobs.path(item.sha256)) for item in found.files.all()]
    return zip_response(request, members, filename=f"{name}-{version}.zip")


@router.get("/workspaces/{workspace}/models/{name}/versions/{int:version}/files/{path:file}",
            response={200: None, **ERRORS})
def model_file(request, workspace: str, name: str, version: int, file: str):
    _, found = _version(request, workspace, name, version)
    item = found.files.filter(path=file).first()
    if item is None:
        raise ApiError(404, f"{name}:{version} has no file {file[:200]!r}.")
    return file_response(request, blobs.open_blob(item.sha256), filename=item.path.rsplit("/", 1)[-1])


# Registering -------------------------------------------------------------------------------------------------------


@router.post("/workspaces/{workspace}/models/{name}/versions", response={201: VersionDetailOut, **WRITE_ERRORS})
def register_model_version(request, workspace: str, name: str, payload: FromRunIn):
    """Register files a run stored under outputs/ (no byte is copied: the version shares the run's blobs)."""
    access = access_for(request, workspace, write=True)
    run = Run.objects.filter(workspace=access.workspace, pk=payload.run_id).select_related(
        "experiment", "environment", "compute_target", "workspace").first()
    if run is None:
        raise ApiError(404, f"No run {payload.run_id} in this workspace.")
    try:
        version = registry.register_from_run(run, request.auth, name, payload.paths, **_fields(payload))
    except registry.RegistryError as error:
        raise _refused(error) from None
    return Status(201, _version_json(version, files=True))


def _fields(payload) -> dict:
    return {"description": payload.description, "tags": payload.tags, "properties": payload.properties,
            "framework": payload.framework, "framework_version": payload.framework_version}


def _json_object(text: str, what: str) -> dict:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise ApiError(400, f"{what} must be a JSON object, e.g. {{\"team\": \"vision\"}}.") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"{what} must be a JSON object, e.g. {{\"team\": \"vision\"}}.")
    return value


@router.post("/workspaces/{workspace}/models/{name}/versions/upload",
             response={201: VersionDetailOut, **WRITE_ERRORS, 413: Error})
def upload_model_version(request, workspace: str, name: str, files: File[list[UploadedFile]],
                         description: Form[str] = "", tags: Form[str] = "", properties: Form[str] = "",
                         framework: Form[str] = "", framework_version: Form[str] = ""):
    """Register uploaded files (each under its name), or one .zip / .tar / .tar.gz archive unpacked. `tags` and
    `properties` are JSON objects."""
    access = access_for(request, workspace, write=True)
    fields = {"description": description, "tags": _json_object(tags, "tags"),
              "properties": _json_object(properties, "properties"), "framework": framework,
              "framework_version": framework_version}
    try:
        with uploads.stage_uploaded_files(files) as staged:
            version = registry.register_staged(access.workspace, request.auth, name, staged, **fields)
    except (SnapshotError, registry.RegistryError) as error:
        raise _refused(error) from None
    return Status(201, _version_json(version, files=True))


@router.post("/workspaces/{workspace}/models/{name}/versions/archive",
             response={201: VersionDetailOut, **WRITE_ERRORS, 413: Error, 415: Error})
def upload_model_archive(request, workspace: str, name: str, description: str = "", tags: str = "",
                         properties: str = "", framework: str = "", framework_version: str = ""):
    """Register a tar archive (plain, gzip, bzip2 or xz) sent as the request body (`Content-Type:
    application/x-tar` or `application/gzip`), read as it arrives. `tags` and `properties` are JSON objects in the
    query string."""
    access = access_for(request, workspace, write=True)
    content_type = request.content_type or ""
    if content_type not in ARCHIVE_TYPES:
        raise ApiError(415, f"Send the archive as the body with Content-Type application/x-tar or application/gzip "
                            f"(not {content_type[:80] or 'none'}); multipart uploads go to .../versions/upload.")
    fields = {"description": description, "tags": _json_object(tags, "tags"),
              "properties": _json_object(properties, "properties"), "framework": framework,
              "framework_version": framework_version}
    try:
        registry.check_model_name(name)
        with uploads.StagedModel() as staged:
            uploads.stream_tar(staged, request, "the request body")
            version = registry.register_staged(access.workspace, request.auth, name, staged, **fields)
    except (SnapshotError, registry.RegistryError) as error:
        raise _refused(error) from None
    return Status(201, _version_json(version, files=True))


# Changing ----------------------------------------------------------------------------------------------------------


@router.put("/workspaces/{workspace}/models/{name}/versions/{int:version}/tags", response={200: VersionOut, **ERRORS})
def set_model_version_tags(request, workspace: str, name: str, version: int, payload: TagsIn):
    """Replace the version's tags."""
    _, found = _version(request, workspace, name, version, write=True)
    try:
        registry.set_tags(found, payload.tags)
    except registry.RegistryError as error:
        raise _refused(error) from None
    return _version_json(found)


@router.put("/workspaces/{workspace}/models/{name}/aliases/{alias}", response={200: AliasOut, **ERRORS})
def set_model_alias(request, workspace: str, name: str, alias: str, payload: AliasIn):
    """Point the alias at a version (moving it if another version had it)."""
    _, found = _version(request, workspace, name, payload.version, write=True)
    try:
        moved = registry.set_alias(found, alias, request.auth)
    except registry.RegistryError as error:
        raise _refused(error) from None
    return {"name": moved.name, "version": found.version, "updated_at": moved.updated_at,
            "updated_by": _user_name(moved.updated_by)}


@router.delete("/workspaces/{workspace}/models/{name}/aliases/{alias}", response={204: None, **ERRORS})
def remove_model_alias(request, workspace: str, name: str, alias: str):
    _, model = _model(request, workspace, name, write=True)
    try:
        registry.remove_alias(model, alias, request.auth)
    except registry.RegistryError as error:
        raise _refused(error) from None
    return Status(204, None)


@router.post("/workspaces/{workspace}/models/{name}/archive", response={200: ModelOut, **ERRORS})
def archive_model(request, workspace: str, name: str, payload: ArchiveIn):
    """Archive (hide from the list, refuse new versions) or unarchive a model; nothing is deleted."""
    _, model = _model(request, workspace, name, write=True)
    registry.set_archived(model, payload.archived)
    return get_model(request, workspace, name)


@router.delete("/workspaces/{workspace}/models/{name}/versions/{int:version}", response={200: Deleted, **WRITE_ERRORS})
def delete_model_version(request, workspace: str, name: str, version: int):
    """Delete a version (owners only) that no deployment serves; its files are freed unless another version, a
    snapshot or a run output holds them."""
    _, found = _version(request, workspace, name, version, owner=True)
    try:
        freed = registry.delete_version(found, request.auth)
    except registry.RegistryError as error:
        raise _refused(error) from None
    return {"deleted": f"{name}:{version}", "freed_bytes": freed}


# From inside a run -------------------------------------------------------------------------------------------------


@run_router.post("/runs/{id:run_id}/models", response={201: VersionDetailOut, **WRITE_ERRORS},
                 url_name="ingest_register_model")
def register_from_script(request, run_id: Id, payload: RunRegisterIn):
    """Register files the script stored under its outputs (uploaded by the SDK first) as a new version of `name`."""
    run = request.run
    try:
        version = registry.register_from_run(run, run.created_by, payload.name, payload.paths, **_fields(payload))
    except registry.RegistryError as error:
        raise _refused(error) from None
    return Status(201, _version_json(version, files=True))

