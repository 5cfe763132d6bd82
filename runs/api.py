"""REST routes for experiments and runs (`router`, personal tokens) and for what a running script records (`ingest`,
the run's own token).

Everything the run pages show is here for scripts: experiments and their runs (filtered, sorted and paged by keyset as
the experiment page does), one run with its status history, cancel, the console log (a range from a byte offset, or
followed live over server-sent events), metrics (the series and their downsampled data, as the charts draw them),
stored files (one, or all as a zip), the snapshot (its files, one file, a zip), child runs, tags, parameters and git
information.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from ninja import Field, File, Form, Query, Router, Schema, Status
from ninja.files import UploadedFile
from ninja.security import HttpBearer

from runs import live, metrics, parameters, runs_table, snapshot_sync, snapshots, storage, tokens
from runs.access import get_experiment_for_user, get_run_for_user
from runs.events import run_stream_response
from runs.forms import ApiSubmitRunForm, RunFilterForm, SeriesDataForm
from runs.models import ACTIVE_STATES, Experiment, MetricKind, MetricSeries, Run, RunGitInfo, RunStatus
from runs.schemas import (
    ArchiveIn,
    CancelOut,
    ChildIn,
    ChildOut,
    EntriesIn,
    ExperimentOut,
    ExperimentPage,
    FileOut,
    LogChunk,
    MetricsIn,
    Params,
    ParamsIn,
    RunDetailOut,
    RunOut,
    RunPage,
    SeriesData,
    SeriesOut,
    SnapshotOut,
    StatusIn,
    StatusOut,
    Stored,
    Tags,
    TagsIn,
)
from runs.telemetry_views import series_payload
from runs.views import console_log_response, snapshot_zip_response, stored_file_response, stored_files_zip
from studio.access import access_for, get_workspace_for_user
from studio.api import ApiError, Error, Id, form_error, token_router
from studio.downloads import file_response
from studio.forms import LogQueryForm, valid_query
from studio.parsing import MAX_TAGS
from studio.sse import valid_last_event_id

router = token_router(tags=["runs"])
ERRORS = {400: Error, 401: Error, 403: Error, 404: Error}
WRITE_ERRORS = {**ERRORS, 409: Error}
PAGE_SIZE = 50


# What a run looks like ------------------------------------------------------------------------------------------------


def run_json(run: Run, *, detail: bool = False, child_count: int | None = None, metric_cells=None,
             param_cells=None) -> dict:
    environment = run.environment
    duration = run.duration
    data = {
        "id": run.pk,
        "experiment": run.experiment.name,
        "display_name": run.display_name,
        "status": run.status,
        "reason": run.reason,
        "exit_code": run.exit_code,
        "created_at": run.created_at,
        "created_by": run.created_by.username if run.created_by_id and run.created_by else None,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "duration_seconds": duration.total_seconds() if duration is not None else None,
        "entry_script": run.entry_script,
        "arguments": run.arguments,
        "env_vars": run.env_vars,
        "tags": run.tags,
        "compute_target": run.compute_target.name,
        "max_duration_seconds": run.max_duration_seconds,
        "resources": run.resources,
        "environment": None if environment is None else {
            "name": environment.name, "version": environment.version, "anonymous": environment.anonymous,
            "definition_hash": environment.definition_hash,
        },
        "parent": run.parent_id,
        "child_count": child_count,
        "metrics": metric_cells,
        "parameters": param_cells,
        "url": reverse("run_detail", args=[run.workspace.name, run.pk]),
    }
    if detail:
        data["status_history"] = [{"status": c.status, "at": c.at} for c in run.status_changes.all()]
        snapshot = run.snapshot
        data["snapshot"] = {"source_name": snapshot.source_name, "file_count": snapshot.file_count,
                            "total_bytes": snapshot.total_bytes}
        data["parameters"] = parameters.as_dict(run)
        git = RunGitInfo.objects.filter(run=run).first()
        data["git"] = git.as_json() if git else None
    return data


def _runs_json(runs: list[Run], columns: list[str] | None = None, param_columns: list[str] | None = None) -> list[dict]:
    runs_table.attach_child_counts(runs)
    if columns:
        runs_table.attach_metric_cells(runs, columns)
    if param_columns:
        runs_table.attach_parameter_cells(runs, param_columns)
    items = []
    for run in runs:
        cells = params = None
        if columns:
            cells = {name: (cell.value if cell.value is not None else (cell.text or None))
                     for name, cell in zip(columns, run.metric_cells, strict=True)}
        if param_columns:
            params = {name: cell.value for name, cell in zip(param_columns, run.param_cells, strict=True)}
        items.append(run_json(run, child_count=run.child_count, metric_cells=cells, param_cells=params))
    return items


RUN_LIST_RELATED = runs_table.RUN_RELATED


# Experiments ----------------------------------------------------------------------------------------------------------


@router.get("/workspaces/{workspace}/experiments", response={200: ExperimentPage, **ERRORS})
def list_experiments(request, workspace: str, archived: bool = False, after: str = "", limit: int = 100):
    """The workspace's experiments by name, 1-500 at a time (`after`: the last name of the previous page). Archived
    experiments are listed with `archived=true`. Each counts its top-level runs and all its runs."""
    access = get_workspace_for_user(request, workspace)
    if not 1 <= limit <= 500:
        raise ApiError(400, "limit is a number from 1 to 500.")
    experiments = Experiment.objects.for_workspace(access.workspace).with_summary()
    if not archived:
        experiments = experiments.filter(archived=False)
    if after:
        experiments = experiments.filter(name__gt=after[:255])
    page = list(experiments.order_by("name")[: limit + 1])
    items = [_experiment_json(access.workspace.name, experiment) for experiment in page[:limit]]
    following = None
    if len(page) > limit:
        following = urlencode({"after": page[limit - 1].name, "limit": limit, **({"archived": "true"} if archived else {})})
    return {"items": items, "next": following}


def _experiment_json(workspace: str, experiment: Experiment) -> dict:
    return {
        "name": experiment.name, "archived": experiment.archived, "created_at": experiment.created_at,
        "runs": experiment.top_run_count, "all_runs": experiment.run_count,
        "latest_status": experiment.latest_status, "latest_run_at": experiment.latest_run_at,
        "url": reverse("experiment_detail", args=[workspace, experiment.name]),
    }


@router.get("/workspaces/{workspace}/experiments/{name}", response={200: ExperimentOut, **ERRORS})
def get_experiment(request, workspace: str, name: str):
    access, experiment = get_experiment_for_user(request, workspace, name)
    return _experiment_json(workspace, Experiment.objects.with_summary().get(pk=experiment.pk))


@router.post("/workspaces/{workspace}/experiments/{name}/archive", response={200: ExperimentOut, **ERRORS})
def archive_experiment(request, workspace: str, name: str, payload: ArchiveIn):
    """Archive (hide from the list) or restore an experiment; nothing is deleted."""
    _, experiment = get_experiment_for_user(request, workspace, name, write=True)
    experiment.set_archived(payload.archived)
    return _experiment_json(workspace, Experiment.objects.with_summary().get(pk=experiment.pk))


@router.get("/workspaces/{workspace}/experiments/{name}/runs", response={200: RunPage, **ERRORS})
def list_experiment_runs(
    request,
    workspace: str,
    name: str,
    status: str = "",
    sort: str = "",
    tag: Query[list[str]] = None,
    range: Query[list[str]] = None,  # noqa: A002 - the page's own parameter name
    metric: Query[list[str]] = None,
    param: Query[list[str]] = None,
    param_filter: Query[list[str]] = None,
    before: int | None = None,
    after: int | None = None,
    below: int | None = None,
    above: int | None = None,
):
    """The experiment's top-level runs, 50 at a time, exactly as its page lists them: `status`, `tag` (`key` or
    `key:value`, repeated), `range` (`metric:low:high`, repeated), `param_filter` (`name=value` or `name:low:high`,
    repeated), `sort` (`id`, `name`, `status`, `started`, `duration`, `compute`, `metric:<name>`, `param:<name>`, with
    `-` for descending). Follow `next` and `previous` (query strings) for the other pages. `metric` chooses the metric
    columns whose last values each run carries, `param` the parameter columns (`parameters`)."""
    _, experiment = get_experiment_for_user(request, workspace, name)
    metric_names = runs_table.scalar_metric_names(experiment)
    param_names = runs_table.parameter_names(experiment)
    query = valid_query(RunFilterForm, request, metric_names=metric_names, parameter_names=param_names)
    filters = RunFilterForm.filters_of(query)
    table = runs_table.Table.from_query(query, filters, metric_names, param_names)
    try:
        page = runs_table.page_for_query(experiment, query, filters, PAGE_SIZE)
    except runs_table.TableError as error:
        raise ApiError(400, str(error)) from None
    previous, following = table.pager(page)
    return {"items": _runs_json(page.runs, table.columns, table.param_columns), "previous": previous.lstrip("?") or None,
            "next": following.lstrip("?") or None}


# Runs -----------------------------------------------------------------------------------------------------------------


@router.get("/workspaces/{workspace}/runs", response={200: RunPage, **ERRORS})
def list_runs(request, workspace: str, status: str = "", before: Id | None = None, limit: int = PAGE_SIZE):
    """Every run of the workspace, child runs included, newest first (`before`: the last id of the previous page)."""
    access = get_workspace_for_user(request, workspace)
    if status and status not in RunStatus.values:
        raise ApiError(400, f"status must be one of {', '.join(RunStatus.values)}.")
    if not 1 <= limit <= 500:
        raise ApiError(400, "limit is a number from 1 to 500.")
    runs = Run.objects.for_workspace(access.workspace).select_related(*RUN_LIST_RELATED).order_by("-id")
    if status:
        runs = runs.filter(status=status)
    if before is not None:
        runs = runs.filter(pk__lt=before)
    page = list(runs[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    next_query = urlencode({k: v for k, v in {"status": status, "before": page[-1].pk if page else None,
                                              "limit": limit}.items() if v}) if more else None
    return {"items": _runs_json(page), "next": next_query}


class SubmitFields(Schema):
    """The submit form's fields (multipart, with the source file as `source`)."""

    experiment: str
    entry_script: str = ""
    arguments: str = ""
    env_vars: str = ""
    compute_target: str = "local"
    max_duration_seconds: str = ""
    display_name: str = ""
    tags: str = ""
    environment: str = ""
    packages: str = ""
    cpu_limit: str = ""
    memory_limit_mb: str = ""
    gpus: str = ""
    snapshot_id: str = Field("", description="Instead of `source`: a snapshot of this workspace made from blobs "
                             "(POST .../snapshots).")
    git: str = Field("", description='Where the source came from, as JSON: {"remote_url", "branch", "commit", "dirty", '
                     '"diff", "diff_truncated", "diff_bytes"} (credentials in the URL are removed; the diff is at most '
                     '1 MB).')


@router.post("/workspaces/{workspace}/runs", response={201: RunOut, **ERRORS, 413: Error}, url_name="submit_run")
def submit_run(request, workspace: str, fields: Form[SubmitFields], source: File[UploadedFile] = None):
    """Submit a run as the submit form does: `source` is a .py file or a .zip/.tar.gz of the source folder (or
    `snapshot_id` a snapshot made from blobs, see `.../snapshots`), `environment` NAME or NAME:VERSION (or `packages`:
    pip requirements), `arguments` split like a shell would."""
    access = access_for(request, workspace, write=True)
    data = request.POST.copy()
    data.setdefault("compute_target", "local")
    form = ApiSubmitRunForm(data, request.FILES, workspace=access.workspace)
    try:
        if not form.is_valid():
            raise form_error(form)
        run = form.submit(request.user)
    finally:
        form.discard()
    return Status(201, run_json(Run.objects.select_related(*RUN_LIST_RELATED).get(pk=run.pk)))


@router.get("/workspaces/{workspace}/runs/{id:run_id}", response={200: RunDetailOut, **ERRORS})
def get_run(request, workspace: str, run_id: Id):
    """One run: its configuration, status and status history."""
    _, run = get_run_for_user(request, workspace, run_id)
    return run_json(run, detail=True, child_count=run.children.count())


@router.post("/workspaces/{workspace}/runs/{id:run_id}/cancel", response={200: CancelOut, **ERRORS})
def cancel_run(request, workspace: str, run_id: Id):
    """Cancel a run: a queued one ends at once, a running one is stopped by its worker; an ended one stays as it was."""
    _, run = get_run_for_user(request, workspace, run_id, write=True)
    requested = run.request_cancel(reason=f"Canceled by {request.user.username}.")
    run.refresh_from_db(fields=["status"])
    if not requested:
        message = f"The run already ended ({run.status})."
    elif run.status == RunStatus.CANCELED:
        message = "The run is canceled."
    else:
        message = "Cancel requested: the run is being stopped."
    return {"status": run.status, "cancel_requested": requested, "message": message}


@router.get("/workspaces/{workspace}/runs/{id:run_id}/children", response={200: RunPage, **ERRORS})
def list_children(request, workspace: str, run_id: Id):
    """The run's child runs, oldest first (at most 200)."""
    _, run = get_run_for_user(request, workspace, run_id)
    children, _total = runs_table.children(run)
    return {"items": _runs_json(children)}


@router.get("/workspaces/{workspace}/runs/{id:run_id}/tags", response={200: Tags, **ERRORS})
def get_tags(request, workspace: str, run_id: Id):
    _, run = get_run_for_user(request, workspace, run_id)
    return {"tags": run.tags}


@router.patch("/workspaces/{workspace}/runs/{id:run_id}/tags", response={200: Tags, **ERRORS})
def change_tags(request, workspace: str, run_id: Id, payload: TagsIn):
    """Set tags (`{"tags": {"key": "value"}}`); a null value removes the tag."""
    _, run = get_run_for_user(request, workspace, run_id, write=True)
    return {"tags": _apply_tags(run, payload.tags, null_removes=True)}


def _apply_tags(run: Run, new: dict, *, null_removes: bool) -> dict:
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        for key, value in new.items():
            if value is None and null_removes:
                run.tags.pop(key, None)
            else:
                run.tags[key] = "" if value is None else str(value)
        if len(run.tags) > MAX_TAGS:
            raise ApiError(400, f"A run holds at most {MAX_TAGS} tags.")
        run.save(update_fields=["tags"])
        live.publish_tags(run)
    return run.tags


@router.get("/workspaces/{workspace}/runs/{id:run_id}/log", response={200: LogChunk, **ERRORS}, url_name="api_run_log")
def run_log(request, workspace: str, run_id: Id, offset: int | None = None, download: str = ""):
    """The console log. With `offset` (bytes), JSON: the display lines from there and the offset to ask for next,
    as the page's polling does; without, the whole log as text (`download=1` as an attachment)."""
    _, run = get_run_for_user(request, workspace, run_id)
    return console_log_response(request, run, valid_query(LogQueryForm, request))


@router.get("/workspaces/{workspace}/runs/{id:run_id}/events", response={200: None, **ERRORS})
def run_events(request, workspace: str, run_id: Id):
    """The console and status changes, live, as server-sent events (`log`, `status`, `end`); send `Last-Event-ID`
    to resume after a reconnect."""
    _, run = get_run_for_user(request, workspace, run_id)
    try:
        last_id = valid_last_event_id(request)
    except ValueError as error:
        raise ApiError(400, str(error)) from None
    return run_stream_response(run.pk, last_id)


@router.get("/workspaces/{workspace}/runs/{id:run_id}/metrics", response={200: list[SeriesOut], **ERRORS})
def list_metrics(request, workspace: str, run_id: Id):
    """Everything the run logged: scalar series (with their last value, count and extremes), lists, rows, tables and
    images. System metrics are the series named `sys/…`."""
    _, run = get_run_for_user(request, workspace, run_id)
    return [
        {"id": series.pk, "name": series.name, "kind": series.kind, "description": series.description,
         "count": series.count, "last": series.last_nonfinite or series.last_value if series.kind == MetricKind.SCALAR
         else None, "min": series.min_value, "max": series.max_value,
         "data_url": reverse("api:series_data", args=[workspace, run.pk, series.pk])
         if series.kind == MetricKind.SCALAR else None}
        for series in MetricSeries.objects.filter(run=run).order_by("name")
    ]


@router.get("/workspaces/{workspace}/runs/{id:run_id}/metrics/{id:series_id}", response={200: SeriesData, **ERRORS},
            url_name="series_data")
def series_data(request, workspace: str, run_id: Id, series_id: Id, x: str = "step", max_points: int | None = None):
    """One scalar series as the charts draw it: downsampled on the server to at most `max_points` (100-5,000,
    default 2,000) keeping extremes, against `x` = step, relative (seconds since start) or time (epoch ms)."""
    _, run = get_run_for_user(request, workspace, run_id)
    series = MetricSeries.objects.filter(pk=series_id, run=run, kind=MetricKind.SCALAR).first()
    if series is None:
        raise ApiError(404, f"No scalar series {series_id} in run {run.pk}.")
    return series_payload(run, series, valid_query(SeriesDataForm, request))


@router.get("/workspaces/{workspace}/runs/{id:run_id}/files", response={200: list[FileOut], **ERRORS})
def list_files(request, workspace: str, run_id: Id):
    """The files the run stored from ./outputs and ./logs (the console log is logs/std_log.txt)."""
    _, run = get_run_for_user(request, workspace, run_id)
    return [{**item, "url": reverse("api:run_file", args=[workspace, run.pk, item["path"]])}
            for item in storage.list_stored_files(run.pk)]


@router.get("/workspaces/{workspace}/runs/{id:run_id}/files.zip", response={200: None, **ERRORS})
def files_zip(request, workspace: str, run_id: Id):
    """Every stored file as one zip, made while it downloads."""
    _, run = get_run_for_user(request, workspace, run_id)
    return stored_files_zip(request, run)


@router.get("/workspaces/{workspace}/runs/{id:run_id}/files/{path:path}", response={200: None, **ERRORS},
            url_name="run_file")
def download_file(request, workspace: str, run_id: Id, path: str):
    _, run = get_run_for_user(request, workspace, run_id)
    return stored_file_response(request, run, path)


@router.get("/workspaces/{workspace}/runs/{id:run_id}/snapshot", response={200: SnapshotOut, **ERRORS})
def get_snapshot(request, workspace: str, run_id: Id):
    """The run's source as submitted: every file with its size and sha256."""
    _, run = get_run_for_user(request, workspace, run_id)
    snapshot = run.snapshot
    return {"source_name": snapshot.source_name, "file_count": snapshot.file_count, "total_bytes": snapshot.total_bytes,
            "ignore_file": snapshot.ignore_file, "ignored_count": snapshot.ignored_count,
            "files": [{"path": e["path"], "size": e["size"], "sha256": e["sha256"]} for e in snapshot.manifest]}


@router.get("/workspaces/{workspace}/runs/{id:run_id}/snapshot/file", response={200: None, **ERRORS})
def snapshot_file(request, workspace: str, run_id: Id, path: str):
    """One file of the snapshot (a download)."""
    _, run = get_run_for_user(request, workspace, run_id)
    entry = run.snapshot.entry(path)
    if entry is None:
        raise ApiError(404, f"No file {path[:200]!r} in the snapshot.")
    return file_response(request, snapshots.open_blob(run.snapshot, entry["path"]), filename=entry["path"].rsplit("/", 1)[-1])


@router.get("/workspaces/{workspace}/runs/{id:run_id}/snapshot.zip", response={200: None, **ERRORS})
def snapshot_zip(request, workspace: str, run_id: Id):
    _, run = get_run_for_user(request, workspace, run_id)
    return snapshot_zip_response(request, run)


# Snapshots sent as blobs: only what the workspace does not hold (runs/snapshot_sync.py) --------------------------------


class ManifestFile(Schema):
    path: str = Field(max_length=4096, description="Relative to the folder, '/' between names.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the file's bytes, lowercase hex.")
    size: int = Field(ge=0, le=2**62)


class MissingIn(Schema):
    files: list[ManifestFile]


class MissingOut(Schema):
    missing: list[str] = Field(description="The sha256s to send (PUT .../blobs/<sha256>), each once.")
    partial: dict[str, int] = Field(description="Of those, the ones partly received: the bytes held, to continue from.")
    max_files: int = Field(description="STUDIO_SNAPSHOT_MAX_FILES")
    max_bytes: int = Field(description="STUDIO_SNAPSHOT_MAX_BYTES (all files together)")
    max_request_bytes: int = Field(description="The largest body one request may carry (STUDIO_REQUEST_MAX_BYTES).")
    max_request_files: int = Field(description="The most files one POST .../blobs may carry.")


class SnapshotIn(Schema):
    files: list[ManifestFile]
    ignore_file: str = Field("", description='".amlignore", ".gitignore" (the root ignore file that applied) or "".')
    ignored_count: int = Field(0, ge=0, le=2**31 - 1, description="How many files the ignore file left out.")
    source_name: str = Field("", max_length=1024, description="The folder's name.")


class SnapshotMade(Schema):
    id: int
    source_name: str
    file_count: int
    total_bytes: int
    ignore_file: str
    ignored_count: int
    uploaded_files: int = Field(description="Files whose bytes were sent for this snapshot (not held before).")
    uploaded_bytes: int = Field(description="Their bytes.")


class BlobState(Schema):
    sha256: str
    size: int | None = Field(description="The file's size (null: nothing received yet).")
    received: int = Field(description="Bytes held: send the range that starts here.")
    complete: bool
    written: int = Field(0, description="Bytes this request added.")


def _sync_error(error: snapshot_sync.SyncError) -> ApiError:
    return ApiError(error.status, str(error), {"missing": error.missing} if error.missing else None)


@router.post("/workspaces/{workspace}/snapshots/missing", response={200: MissingOut, **ERRORS})
def snapshot_missing(request, workspace: str, payload: MissingIn):
    """Which files of a manifest the studio needs: a sha256 counts as held only when this workspace holds it (its
    recent snapshots, its runs' outputs, its finished uploads). Also the limits, so a client can check a folder before
    hashing it (send an empty list)."""
    access = access_for(request, workspace, write=True)
    if len(payload.files) > settings.STUDIO_SNAPSHOT_MAX_FILES:
        raise ApiError(400, f"The folder holds {len(payload.files):,} files; the limit is "
                            f"{settings.STUDIO_SNAPSHOT_MAX_FILES:,} (STUDIO_SNAPSHOT_MAX_FILES). List folders you do not "
                            "need in .amlignore.")
    try:
        needed, partial = snapshot_sync.missing(access.workspace, [item.sha256 for item in payload.files])
    except snapshot_sync.SyncError as error:
        raise _sync_error(error) from None
    return {"missing": needed, "partial": partial, "max_files": settings.STUDIO_SNAPSHOT_MAX_FILES,
            "max_bytes": settings.STUDIO_SNAPSHOT_MAX_BYTES, "max_request_bytes": settings.STUDIO_REQUEST_MAX_BYTES,
            "max_request_files": settings.DATA_UPLOAD_MAX_NUMBER_FILES or 1000}


@router.get("/workspaces/{workspace}/blobs/{sha256}", response={200: BlobState, **ERRORS}, url_name="blob_state")
def blob_state(request, workspace: str, sha256: str):
    """How much of a blob this workspace holds (`received`): an interrupted upload continues from there."""
    access = access_for(request, workspace, write=True)
    try:
        return snapshot_sync.state(access.workspace, sha256)
    except snapshot_sync.SyncError as error:
        raise _sync_error(error) from None


@router.api_operation(["HEAD"], "/workspaces/{workspace}/blobs/{sha256}", url_name="blob_state",
                      include_in_schema=False)
def blob_state_head(request, workspace: str, sha256: str):
    """The state as headers: Upload-Offset (bytes held), Upload-Length (the size, when known), Upload-Complete."""
    current = blob_state(request, workspace, sha256)
    response = HttpResponse(status=200)
    response["Upload-Offset"] = str(current["received"])
    if current["size"] is not None:
        response["Upload-Length"] = str(current["size"])
    response["Upload-Complete"] = "1" if current["complete"] else "0"
    return response


@router.put("/workspaces/{workspace}/blobs/{sha256}", response={200: BlobState, **ERRORS, 409: Error, 413: Error},
            url_name="upload_blob")
def upload_blob(request, workspace: str, sha256: str):
    """Send one range of a file, named by its sha256: `Content-Range: bytes START-END/TOTAL` (END inclusive; `bytes
    */0` for an empty file) with those bytes as the body, at most STUDIO_REQUEST_MAX_BYTES a request. START must be
    what the studio holds (409 otherwise: ask GET). The last range checks the sha256 (a mismatch is refused, 400)."""
    access = access_for(request, workspace, write=True)
    content_range = request.headers.get("Content-Range", "")
    length = request.headers.get("Content-Length")
    try:
        if content_range.strip() == "bytes */0":
            return snapshot_sync.receive_empty(access.workspace, sha256)
        return snapshot_sync.receive(access.workspace, sha256, content_range, request,
                                     int(length) if length and length.isdigit() else None)
    except snapshot_sync.SyncError as error:
        raise _sync_error(error) from None


class BlobsStored(Schema):
    held: list[str] = Field(description="The sha256s now held (finished uploads waiting for a snapshot).")
    written: int = Field(description="Bytes this request added.")


@router.post("/workspaces/{workspace}/blobs", response={200: BlobsStored, **ERRORS, 413: Error}, url_name="upload_blobs")
def upload_blobs(request, workspace: str):
    """Several small files at once: multipart/form-data with one part per whole file, each part named by the file's
    sha256 (at most 100 parts and STUDIO_REQUEST_MAX_BYTES a request). Each is checked; one whose bytes do not match
    its name is not kept (400 naming it). Larger files go in ranges to PUT .../blobs/<sha256>."""
    access = access_for(request, workspace, write=True)
    parts = [(name, upload) for name, uploads in request.FILES.lists() for upload in uploads]
    if not parts:
        raise ApiError(400, "Send the files as multipart/form-data, one part per file, each named by its sha256.")
    try:
        held, written = snapshot_sync.receive_files(access.workspace, parts)
    except snapshot_sync.SyncError as error:
        raise _sync_error(error) from None
    return {"held": held, "written": written}


@router.post("/workspaces/{workspace}/snapshots", response={201: SnapshotMade, **ERRORS})
def create_snapshot(request, workspace: str, payload: SnapshotIn):
    """A snapshot of a folder from its manifest, every file of which this workspace must hold (400 naming the missing
    ones, their sha256s in `errors.missing`); the rules of uploads apply (paths, names, limits). Submit a run with it
    as `snapshot_id`."""
    access = access_for(request, workspace, write=True)
    try:
        snapshot, uploaded_files, uploaded_bytes = snapshot_sync.create_snapshot(
            access.workspace, request.user, [item.model_dump() for item in payload.files],
            ignore_file=payload.ignore_file, ignored_count=payload.ignored_count, source_name=payload.source_name)
    except snapshot_sync.SyncError as error:
        raise _sync_error(error) from None
    return Status(201, {"id": snapshot.pk, "source_name": snapshot.source_name, "file_count": snapshot.file_count,
                        "total_bytes": snapshot.total_bytes, "ignore_file": snapshot.ignore_file,
                        "ignored_count": snapshot.ignored_count, "uploaded_files": uploaded_files,
                        "uploaded_bytes": uploaded_bytes})


# Ingest: what a running script records, with its run token ------------------------------------------------------------


class RunTokenAuth(HttpBearer):
    """The run-scoped token a script gets as STUDIO_RUN_TOKEN (`Authorization: Bearer <token>`): it writes to its run
    and the run's children while the run is going."""

    openapi_scheme = "bearer"

    def authenticate(self, request: HttpRequest, token: str):
        """The run the path names, when the token may write to it (checked before the body is parsed)."""
        root = tokens.authenticate(token)
        if root is None:
            return None
        if root.status not in ACTIVE_STATES:
            raise ApiError(403, f"Run {root.pk} has ended ({root.status}): its token no longer works.")
        run_id = request.resolver_match.kwargs.get("run_id")
        target = Run.objects.select_related("parent", "experiment", "workspace").filter(pk=run_id).first()
        if target is None or not tokens.in_scope(root, target):
            raise ApiError(403, f"This token may write only to run {root.pk} and its child runs.")
        if request.method != "GET" and target.is_final:
            raise ApiError(409, f"Run {target.pk} has ended ({target.status}): nothing more can be recorded for it.")
        request.run = target
        return root


ingest = Router(auth=RunTokenAuth(), tags=["ingest (run token)"])


@ingest.post("/runs/{id:run_id}/metrics", response={200: Stored, **WRITE_ERRORS, 413: Error}, url_name="ingest_metrics")
def post_metrics(request, run_id: Id, payload: MetricsIn):
    """Append scalar points, each series as columns (JSON arrays or packed float64s); at most 100,000 points per
    request. The points of a series are stored in the order sent, as arrays: no work per point."""
    run = request.run
    columns = []
    for series in payload.series:
        try:
            columns.append((series, *series.columns()))
        except ValueError as error:
            raise ApiError(400, str(error)) from None
    stored = 0
    with transaction.atomic():
        for series, steps, values, times in columns:
            try:
                stored += metrics.append_scalars(run, series.name, steps, values, times, series.description)
            except metrics.MetricError as error:
                raise ApiError(400, str(error)) from None
        live.publish_metrics(run, [series.name for series, *_ in columns])
    return {"stored": stored}


@ingest.post("/runs/{id:run_id}/entries", response={200: Stored, **WRITE_ERRORS}, url_name="ingest_entries")
def post_entries(request, run_id: Id, payload: EntriesIn):
    """Append lists, table rows and whole tables."""
    run = request.run
    with transaction.atomic():
        for entry in payload.entries:
            try:
                metrics.append_entries(run, entry.name, entry.kind, [_entry_data(entry.kind, entry.data)])
            except metrics.MetricError as error:
                raise ApiError(400, str(error)) from None
        live.publish_metrics(run, [entry.name for entry in payload.entries])
    return {"stored": len(payload.entries)}


def _entry_data(kind: str, data):
    if kind == "list":
        return [metrics.json_number(float(v)) if not isinstance(v, str) else v for v in data]
    return {str(k): v for k, v in data.items()}


@ingest.get("/runs/{id:run_id}/tags", response={200: Tags, **ERRORS}, url_name="ingest_tags")
def read_tags(request, run_id: Id):
    return {"tags": request.run.tags}


@ingest.post("/runs/{id:run_id}/tags", response={200: Tags, **WRITE_ERRORS})
def set_tags(request, run_id: Id, payload: TagsIn):
    """Set tags; a null value makes a tag without a value."""
    return {"tags": _apply_tags(request.run, payload.tags, null_removes=False)}


@ingest.post("/runs/{id:run_id}/parameters", response={200: Params, **WRITE_ERRORS}, url_name="ingest_parameters")
def set_parameters(request, run_id: Id, payload: ParamsIn):
    """Set parameters (`{"parameters": {"learning_rate": 0.01, "optimizer": "adam"}}`): text, finite numbers or
    booleans. A name set again takes the new value; a value the script sets replaces the one parsed from the run's
    arguments. Answers with all the run's parameters."""
    try:
        parameters.store(request.run, payload.parameters)
    except parameters.ParameterError as error:
        raise ApiError(400, str(error)) from None
    return {"parameters": parameters.as_dict(request.run)}


@ingest.post("/runs/{id:run_id}/images", response={201: Stored, **WRITE_ERRORS, 413: Error}, url_name="ingest_image")
def post_image(request, run_id: Id, name: Form[str], file: File[UploadedFile]):
    """Log an image (PNG, JPEG or SVG) under the series `name`."""
    run = request.run
    try:
        name = metrics.check_name(name)
    except metrics.MetricError as error:
        raise ApiError(400, str(error)) from None
    if file.size > settings.STUDIO_IMAGE_MAX_BYTES:
        raise ApiError(413, f"Images are at most {settings.STUDIO_IMAGE_MAX_BYTES:,} bytes (STUDIO_IMAGE_MAX_BYTES).")
    fmt = storage.image_format(file)
    if fmt is None:
        raise ApiError(400, "Images must be PNG, JPEG or SVG.")
    with transaction.atomic():
        try:
            series = metrics.series_for(run, name, MetricKind.IMAGE)
            relative = f"images/{series.pk}/{series.count}.{'jpg' if fmt == 'jpeg' else fmt}"
            metrics.append_entries(run, name, MetricKind.IMAGE, [{"file": relative, "format": fmt, "size": file.size}])
            live.publish_metrics(run, [name])
        except metrics.MetricError as error:
            raise ApiError(400, str(error)) from None
        target = storage.run_dir(run.pk) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            for chunk in file.chunks():
                handle.write(chunk)
    return Status(201, {"stored": relative})


@ingest.post("/runs/{id:run_id}/files", response={201: Stored, **WRITE_ERRORS, 413: Error}, url_name="ingest_file")
def post_file(request, run_id: Id, name: Form[str], file: File[UploadedFile]):
    """Store a file under the run's outputs: `name` is a relative path such as `model.pkl` or `plots/roc.png`."""
    run = request.run
    relative = storage.output_path(name)
    if file.size > settings.STUDIO_UPLOAD_MAX_BYTES:
        raise ApiError(413, f"Files are at most {settings.STUDIO_UPLOAD_MAX_BYTES:,} bytes (STUDIO_UPLOAD_MAX_BYTES).")
    storage.store_upload(run.pk, relative, file)
    return Status(201, {"stored": f"outputs/{relative}"})


@ingest.post("/runs/{id:run_id}/children", response={201: ChildOut, **WRITE_ERRORS}, url_name="ingest_children")
def post_child(request, run_id: Id, payload: ChildIn):
    """Start a child run (Running at once); its records go to `/runs/<its id>/…` with the same token."""
    child = request.run.create_child(payload.name or "")
    return Status(201, {"run_id": child.pk})


@ingest.post("/runs/{id:run_id}/status", response={200: StatusOut, **WRITE_ERRORS}, url_name="ingest_status")
def post_status(request, run_id: Id, payload: StatusIn):
    """End a child run, or report the script's own run as failed (it still ends when its process does)."""
    run = request.run
    if run.parent_id is None:
        if payload.status == RunStatus.FAILED:
            Run.objects.filter(pk=run.pk).update(reported_failure=payload.reason or "Failed by the script.")
        return {"status": run.status}
    run.end_with_descendants(payload.status, payload.reason)
    return {"status": payload.status}


