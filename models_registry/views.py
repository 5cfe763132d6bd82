"""The registry's pages: Models (the list), a model (its versions side by side, aliases, archive), a version (files,
signature, lineage, where it is deployed, tags), the upload form, and the run page's panel that registers a run's
outputs. Readers see and download; contributors register, tag, move aliases and archive; owners delete versions."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from models_registry import queries, registry, uploads
from models_registry.forms import (
    PAGE_SIZE,
    AliasForm,
    ModelListQuery,
    RegisterFromRunForm,
    TagsForm,
    UploadModelForm,
    VersionListQuery,
)
from models_registry.models import AliasChange, ModelVersion, RegisteredModel
from runs import storage
from runs.access import get_run_for_user
from runs.forms import ArchiveForm
from runs.snapshots import SnapshotError
from studio import blobs
from studio.access import access_for, get_in_workspace, get_workspace_for_user
from studio.downloads import ZipMember, file_response, zip_response
from studio.forms import error_message, valid_query

OUTPUT_CHOICES = 300  # files and folders offered on the run page


def get_model(request, workspace: str, name: str, *, write: bool = False):
    return get_in_workspace(request, workspace, RegisteredModel, write=write,
                            missing=f"No model named {name[:255]!r} in this workspace.", name=name)


def get_version(request, workspace: str, name: str, version: int, *, write: bool = False, owner: bool = False):
    access, model = get_in_workspace(request, workspace, RegisteredModel, write=write, owner=owner,
                                     missing=f"No model named {name[:255]!r} in this workspace.", name=name)
    found = ModelVersion.objects.filter(model=model, version=version).select_related("model", "run").first()
    if found is None:
        raise Http404(f"The model {model.name} has no version {version}.")
    return access, found


def _refusal(request, error: Exception) -> None:
    messages.error(request, str(error))


# The list and the pages ----------------------------------------------------------------------------------------


@require_GET
@login_required
def model_list(request, workspace: str):
    access = get_workspace_for_user(request, workspace)
    query = valid_query(ModelListQuery, request)
    rows, next_cursor = queries.model_page(access.workspace, query, PAGE_SIZE)
    params = request.GET.copy()
    params["after"] = next_cursor
    return render(request, "models_registry/model_list.html", {
        "access": access, "workspace": access.workspace, "models": rows, "query": query,
        "next_url": f"?{params.urlencode()}" if next_cursor else "", "filtered": any(
            query.get(key) for key in ("q", "tag", "framework", "alias")),
        "raw": request.GET,
    })


@require_GET
@login_required
def model_detail(request, workspace: str, name: str):
    access, model = get_model(request, workspace, name)
    query = valid_query(VersionListQuery, request)
    versions, next_before = queries.version_page(model, query["before"], PAGE_SIZE)
    columns = queries.metric_columns(versions)
    return render(request, "models_registry/model_detail.html", {
        "access": access, "workspace": access.workspace, "model": model, "versions": versions,
        "metric_columns": columns, "next_before": next_before, "chart": queries.metric_chart(versions, columns),
        "aliases": model.aliases.select_related("version", "updated_by"),
        "alias_changes": AliasChange.objects.filter(model=model).select_related("by")[:20],
        "version_count": model.versions.count(),
    })


@require_GET
@login_required
def model_version(request, workspace: str, name: str, version: int):
    access, found = get_version(request, workspace, name, version)
    files = list(found.files.all())
    return render(request, "models_registry/model_version.html", {
        "access": access, "workspace": access.workspace, "model": found.model, "version": found,
        "tree": queries.file_tree(files), "aliases": found.aliases.all(),
        "deployments": found.deployments.select_related("endpoint"),
        "tags_form": TagsForm(initial={"tags": "\n".join(f"{k}={v}" for k, v in found.tags.items())}),
        "signature": (found.details or {}).get("signature"),
    })


# Registering -----------------------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def model_upload(request, workspace: str):
    """Register a model trained elsewhere: files, or a folder as an archive."""
    access = access_for(request, workspace, write=request.method == "POST")
    form = UploadModelForm(request.POST or None, request.FILES or None, initial={"name": request.GET.get("name", "")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            with uploads.stage_uploaded_files(data["files"]) as staged:
                version = registry.register_staged(
                    access.workspace, request.user, data["name"], staged, description=data["description"],
                    tags=data["tags"], framework=data["framework"], framework_version=data["framework_version"])
        except (SnapshotError, registry.RegistryError) as error:
            form.add_error("files" if isinstance(error, SnapshotError) else None, str(error))
        else:
            messages.success(request, f"Registered {version.model.name} version {version.version}.")
            return redirect("model_version", workspace=workspace, name=version.model.name, version=version.version)
    return render(request, "models_registry/model_upload.html", {
        "access": access, "workspace": access.workspace, "form": form,
        "model_names": RegisteredModel.objects.filter(workspace=access.workspace).values_list("name", flat=True)[:500],
    }, status=400 if form.errors else 200)


def output_choices(run_id: int) -> list[tuple[str, str]]:
    """The run's stored outputs a model can be made of: every folder (as `outputs/x/`) and file under outputs/."""
    files = [item for item in storage.list_stored_files(run_id) if item["path"].startswith("outputs/")]
    folders: dict[str, int] = {}
    for item in files:
        parts = item["path"].split("/")[1:-1]
        for depth in range(1, len(parts) + 1):
            folder = "outputs/" + "/".join(parts[:depth]) + "/"
            folders[folder] = folders.get(folder, 0) + item["size"]
    choices = [(path, f"{path} ({_size(size)})") for path, size in sorted(folders.items())]
    choices += [(item["path"], f"{item['path']} ({_size(item['size'])})") for item in files]
    return sorted(choices)[:OUTPUT_CHOICES]


def _size(count: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


@require_GET
@login_required
def run_models(request, workspace: str, run_id: int):
    """The run page's Models panel (loaded by htmx): versions registered from the run, and the form to register."""
    access, run = get_run_for_user(request, workspace, run_id)
    choices = output_choices(run.pk)
    return render(request, "models_registry/_run_models.html", {
        "access": access, "workspace": access.workspace, "run": run,
        "registered": ModelVersion.objects.filter(run=run).select_related("model").order_by("-created_at"),
        "form": RegisterFromRunForm(choices=choices, initial={"paths": _likely_model(choices)}) if choices else None,
    })


def _likely_model(choices: list[tuple[str, str]]) -> list[str]:
    for path, _ in choices:
        if path.rsplit("/", 1)[-1].startswith("model") or path.rstrip("/").endswith("/model"):
            return [path]
    return []


@require_POST
@login_required
def run_register_model(request, workspace: str, run_id: int):
    access, run = get_run_for_user(request, workspace, run_id, write=True)
    form = RegisterFromRunForm(request.POST, choices=output_choices(run.pk))
    if form.is_valid():
        data = form.cleaned_data
        try:
            version = registry.register_from_run(run, request.user, data["name"], data["paths"],
                                                 description=data["description"], tags=data["tags"])
        except registry.RegistryError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Registered {version.model.name} version {version.version} from run {run.pk}.")
            target = reverse("model_version", args=[workspace, version.model.name, version.version])
            return HttpResponseClientRedirect(target) if request.htmx else redirect(target)
    if request.htmx:
        return render(request, "models_registry/_run_models.html", {
            "access": access, "workspace": access.workspace, "run": run, "form": form,
            "registered": ModelVersion.objects.filter(run=run).select_related("model").order_by("-created_at"),
        }, status=400)
    messages.error(request, f"The model was not registered: {error_message(form)}")
    return redirect("run_detail", workspace=workspace, run_id=run.pk)


# Changing ----------------------------------------------------------------------------------------------------------


@require_POST
@login_required
def model_alias(request, workspace: str, name: str):
    """Set or move an alias to a version; an empty version removes it."""
    access, model = get_model(request, workspace, name, write=True)
    form = AliasForm(request.POST)
    if not form.is_valid():
        raise BadRequest(error_message(form))
    alias, number = form.cleaned_data["alias"], form.cleaned_data["version"]
    try:
        if number is None:
            registry.remove_alias(model, alias, request.user)
            messages.success(request, f"Removed the alias {alias}.")
        else:
            version = ModelVersion.objects.filter(model=model, version=number).first()
            if version is None:
                raise registry.RegistryError(f"The model {model.name} has no version {number}.")
            registry.set_alias(version, alias, request.user)
            messages.success(request, f"{model.name}@{alias} is now version {number}.")
    except registry.RegistryError as error:
        _refusal(request, error)
    return redirect(request.POST.get("next") if _safe_next(request, workspace) else
                    reverse("model_detail", args=[workspace, model.name]))


def _safe_next(request, workspace: str) -> bool:
    target = request.POST.get("next", "")
    return target.startswith(f"/w/{workspace}/models/") and "//" not in target and "\\" not in target


@require_POST
@login_required
def model_archive(request, workspace: str, name: str):
    _, model = get_model(request, workspace, name, write=True)
    form = ArchiveForm(request.POST)
    if not form.is_valid():
        raise BadRequest(error_message(form))
    registry.set_archived(model, form.cleaned_data["archived"])
    messages.success(request, f"{model.name} {'archived: it is hidden from the list' if model.archived else 'unarchived'}.")
    return redirect("model_detail", workspace=workspace, name=model.name)


@require_POST
@login_required
def model_version_tags(request, workspace: str, name: str, version: int):
    _, found = get_version(request, workspace, name, version, write=True)
    form = TagsForm(request.POST)
    if form.is_valid():
        registry.set_tags(found, form.cleaned_data["tags"])
        messages.success(request, "Tags saved.")
    else:
        messages.error(request, f"Tags not saved: {error_message(form)}")
    return redirect("model_version", workspace=workspace, name=name, version=version)


@require_POST
@login_required
def model_version_delete(request, workspace: str, name: str, version: int):
    _, found = get_version(request, workspace, name, version, owner=True)
    try:
        freed = registry.delete_version(found, request.user)
    except registry.RegistryError as error:
        _refusal(request, error)
        return redirect("model_version", workspace=workspace, name=name, version=version)
    messages.success(request, f"Deleted {name}:{version}; {_size(freed)} freed.")
    return redirect("model_detail", workspace=workspace, name=name)


# Downloads ---------------------------------------------------------------------------------------------------------


@require_GET
@login_required
def model_file(request, workspace: str, name: str, version: int, file: str):
    _, found = get_version(request, workspace, name, version)
    item = found.files.filter(path=file).first()
    if item is None:
        raise Http404(f"{name}:{version} has no file {file[:200]!r}.")
    return file_response(request, blobs.open_blob(item.sha256), filename=item.path.rsplit("/", 1)[-1])


@require_GET
@login_required
def model_files_zip(request, workspace: str, name: str, version: int):
    _, found = get_version(request, workspace, name, version)
    members = [ZipMember(item.path, blobs.path(item.sha256)) for item in found.files.all()]
    return zip_response(request, members, filename=f"{name}-{version}.zip")
