"""Experiments and runs pages. Thin views: access helper, form, model or domain call, render."""

from __future__ import annotations

import tempfile
import zipfile

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest
from django.http import Http404, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HTMX_STOP_POLLING

from environments.models import Environment
from runs import logs, runs_table, snapshots, storage
from runs.downloads import file_response
from runs.forms import ArchiveForm, ExperimentListForm, RunFilterForm, SubmitRunForm
from runs.models import Experiment, Run, RunStatus
from studio.access import get_rw_workspace_for_user, get_workspace_for_user

PAGE_SIZE = 50


def _get_run(access, run_id: int) -> Run:
    return get_object_or_404(
        Run.objects.select_related("experiment", "compute_target", "snapshot", "created_by", "environment"),
        pk=run_id,
        workspace=access.workspace,
    )


def _valid_query(form_class, request):
    form = form_class(request.GET)
    if not form.is_valid():
        raise BadRequest("; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
    return form.cleaned_data


@require_GET
@login_required
def experiment_list(request, workspace: str):
    access = get_workspace_for_user(request, workspace)
    query = _valid_query(ExperimentListForm, request)
    experiments = Experiment.objects.for_workspace(access.workspace).with_summary()
    archived_count = Experiment.objects.for_workspace(access.workspace).filter(archived=True).count()
    if not query["archived"]:
        experiments = experiments.filter(archived=False)
    return render(
        request,
        "runs/experiment_list.html",
        {
            "access": access,
            "workspace": access.workspace,
            "experiments": experiments,
            "show_archived": query["archived"],
            "archived_count": archived_count,
        },
    )


@require_GET
@login_required
def experiment_detail(request, workspace: str, name: str):
    """The experiment's top-level runs (see runs/runs_table.py); `?children_of=<id>` gives a run's child rows."""
    access = get_workspace_for_user(request, workspace)
    experiment = get_object_or_404(Experiment, workspace=access.workspace, name=name)
    metric_names = runs_table.scalar_metric_names(experiment)
    form = RunFilterForm(request.GET, metric_names=metric_names)
    if not form.is_valid():
        return HttpResponseBadRequest(form.error_message(), content_type="text/plain; charset=utf-8")
    query = form.cleaned_data
    table = runs_table.Table.from_query(query, form.filters, metric_names)
    context = {"access": access, "workspace": access.workspace, "experiment": experiment, "table": table}
    if query["children_of"] is not None:
        parent = get_object_or_404(Run, experiment=experiment, pk=query["children_of"])
        context["runs"], context["child_total"] = runs_table.children(parent)
        context["parent"] = parent
        template = "runs/_runs_table.html#child-rows"
    else:
        try:
            page = runs_table.page(
                experiment, sort=query["sort"], filters=form.filters, size=PAGE_SIZE,
                below=query["below"] if query["before"] is None else query["before"],
                above=query["above"] if query["after"] is None else query["after"],
            )
        except runs_table.TableError as exc:
            return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
        counts = runs_table.status_counts(experiment)
        context.update(
            runs=page.runs,
            pager=table.pager(page),
            metric_names=metric_names,
            status_filter=query["status"],
            status_links=table.status_links(counts, RunStatus.choices),
        )
        template = "runs/experiment_detail.html"
        if request.htmx and request.htmx.target == "runs-table":
            template += "#runs-table"
    runs_table.attach_metric_cells(context["runs"], table.columns)
    runs_table.attach_child_counts(context["runs"])
    return render(request, template, context)


@require_POST
@login_required
def experiment_archive(request, workspace: str, name: str):
    access = get_rw_workspace_for_user(request, workspace)
    experiment = get_object_or_404(Experiment, workspace=access.workspace, name=name)
    form = ArchiveForm(request.POST)
    if not form.is_valid():
        raise BadRequest("archived must be true or false.")
    experiment.set_archived(form.cleaned_data["archived"])
    state = "archived: it is hidden from the list unless you show archived experiments" if experiment.archived else "restored"
    messages.success(request, f"Experiment {experiment.name} {state}.")
    return redirect("experiment_detail", workspace=workspace, name=name)


@require_http_methods(["GET", "POST"])
@login_required
def run_submit(request, workspace: str):
    access = get_rw_workspace_for_user(request, workspace)
    initial = {"experiment": request.GET.get("experiment", "")[:255], "compute_target": "local"}
    form = SubmitRunForm(request.POST or None, request.FILES or None, workspace=access.workspace, initial=initial)
    if request.method == "POST":
        try:
            if form.is_valid():
                run = form.submit(request.user)
                return redirect("run_detail", workspace=workspace, run_id=run.pk)
        finally:
            form.discard()
    experiments = Experiment.objects.for_workspace(access.workspace).filter(archived=False).values_list("name", flat=True)
    return render(
        request,
        "runs/run_submit.html",
        {
            "access": access,
            "workspace": access.workspace,
            "form": form,
            "experiment_names": experiments,
            "environment_names": Environment.objects.visible_to(access.workspace)
            .order_by("name")
            .values_list("name", flat=True)
            .distinct(),
        },
        status=400 if form.errors else 200,
    )


@require_GET
@login_required
def run_detail(request, workspace: str, run_id: int):
    access = get_workspace_for_user(request, workspace)
    run = _get_run(access, run_id)
    context = {
        "access": access,
        "workspace": access.workspace,
        "run": run,
        "timeline": run.status_changes.all(),
        "environment_image": run.environment.image() if run.environment else None,
    }
    if request.htmx and request.GET.get("part") == "summary":
        response = render(request, "runs/run_detail.html#run-summary", context)
        if run.is_final:
            response.status_code = HTMX_STOP_POLLING
        return response
    log_path = storage.console_log_path(run.pk)
    if run.is_final:
        context["log_lines"], context["log_truncated"] = logs.tail(log_path)
        context["log_size"] = logs.size(log_path)
    context["files"] = storage.list_stored_files(run.pk)
    context["tree"] = snapshots.file_tree(run.snapshot)
    return render(request, "runs/run_detail.html", context)


@require_POST
@login_required
def run_cancel(request, workspace: str, run_id: int):
    access = get_rw_workspace_for_user(request, workspace)
    run = _get_run(access, run_id)
    if run.request_cancel(reason=f"Canceled by {request.user.username}."):
        messages.success(request, "Cancel requested: the run is being stopped.")
    else:
        messages.info(request, f"The run already ended ({run.get_status_display()}).")
    return redirect("run_detail", workspace=workspace, run_id=run.pk)


@require_GET
@login_required
def run_log(request, workspace: str, run_id: int):
    """The full console log as text; with ?offset=N, JSON lines from that byte on (the polling fallback)."""
    access = get_workspace_for_user(request, workspace)
    run = _get_run(access, run_id)
    path = storage.console_log_path(run.pk)
    if "offset" in request.GET:
        try:
            offset = int(request.GET["offset"])
        except ValueError:
            raise BadRequest("offset must be a whole number of bytes.") from None
        lines, next_offset = logs.chunk(path, offset)
        return JsonResponse({"lines": lines, "next_offset": next_offset, "status": run.status, "final": run.is_final})
    if not path.is_file():
        return HttpResponse("", content_type="text/plain; charset=utf-8")
    return file_response(
        request,
        open(path, "rb"),
        filename=f"run-{run.pk}-std_log.txt",
        as_attachment=bool(request.GET.get("download")),
        content_type="text/plain; charset=utf-8",
    )


@require_GET
@login_required
def run_file(request, workspace: str, run_id: int, path: str):
    access = get_workspace_for_user(request, workspace)
    run = _get_run(access, run_id)
    stored = storage.resolve_stored_file(run.pk, path)
    if stored is None:
        raise Http404("No such file in this run.")
    # Always a download: a stored HTML or SVG file is never rendered in the studio's origin.
    return file_response(request, open(stored, "rb"), filename=stored.name)


@require_GET
@login_required
def run_files_zip(request, workspace: str, run_id: int):
    access = get_workspace_for_user(request, workspace)
    run = _get_run(access, run_id)
    spool = tempfile.TemporaryFile()
    root = storage.run_dir(run.pk)
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in storage.list_stored_files(run.pk):
            archive.write(root / item["path"], item["path"])
    spool.seek(0)
    return file_response(request, spool, filename=f"run-{run.pk}-files.zip")


@require_GET
@login_required
def snapshot_file(request, workspace: str, run_id: int):
    """One snapshot file shown in the viewer (text) or downloaded (?download=1)."""
    access = get_workspace_for_user(request, workspace)
    run = _get_run(access, run_id)
    path = request.GET.get("path", "")
    entry = run.snapshot.entry(path)
    if entry is None:
        raise Http404("No such file in the snapshot.")
    handle = snapshots.open_blob(run.snapshot, path)
    if request.GET.get("download"):
        return file_response(request, handle, filename=path.rsplit("/", 1)[-1])
    with handle:
        data = handle.read(512 * 1024)
    text = None if b"\x00" in data else data.decode("utf-8", errors="replace")
    context = {"run": run, "workspace": access.workspace, "entry": entry, "text": text, "cut": entry["size"] > len(data)}
    template = "runs/_snapshot_file.html" if request.htmx else "runs/snapshot_file.html"
    return render(request, template, context)


@require_GET
@login_required
def snapshot_zip(request, workspace: str, run_id: int):
    access = get_workspace_for_user(request, workspace)
    run = _get_run(access, run_id)
    spool = tempfile.TemporaryFile()
    snapshots.write_zip(run.snapshot, spool)
    spool.seek(0)
    return file_response(request, spool, filename=f"run-{run.pk}-snapshot.zip")

