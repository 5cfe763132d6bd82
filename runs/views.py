"""Experiments and runs pages. Thin views: access helper, form, model or domain call, render."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest
from django.db.models import Count, Q
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HTMX_STOP_POLLING

from environments.models import Environment
from runs import gitinfo, parameters, runs_table, snapshots, storage
from runs.access import get_experiment_for_user, get_run_for_user
from runs.forms import ArchiveForm, ExperimentListForm, RunFilterForm, RunPageForm, SnapshotFileForm, SubmitRunForm
from runs.models import Experiment, Run, RunGitInfo, RunStatus
from studio import console
from studio.access import get_rw_workspace_for_user, get_workspace_for_user
from studio.downloads import file_response, zip_response
from studio.forms import LogQueryForm, valid_query

PAGE_SIZE = 50
RUN_TABS = [("overview", "Overview"), ("metrics", "Metrics"), ("console", "Console"), ("outputs", "Outputs"),
            ("snapshot", "Snapshot"), ("system", "System"), ("children", "Children")]


@require_GET
@login_required
def dashboard(request, workspace: str):
    access = get_workspace_for_user(request, workspace)
    runs = Run.objects.for_workspace(access.workspace)
    recent = runs.select_related("experiment", "compute_target").order_by("-id")[:20]
    # counted as the Experiments list counts them (archived experiments left out)
    counts = runs.filter(experiment__archived=False).aggregate(total=Count("id"), top=Count("id", filter=Q(parent__isnull=True)))
    experiments = Experiment.objects.for_workspace(access.workspace).filter(archived=False).count()
    return render(request, "runs/dashboard.html", {"access": access, "workspace": access.workspace, "recent_runs": recent,
                                                   "run_counts": counts, "experiment_count": experiments})


@require_GET
@login_required
def experiment_list(request, workspace: str):
    access = get_workspace_for_user(request, workspace)
    query = valid_query(ExperimentListForm, request)
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
    access, experiment = get_experiment_for_user(request, workspace, name)
    metric_names = runs_table.scalar_metric_names(experiment)
    param_names = runs_table.parameter_names(experiment)
    query = valid_query(RunFilterForm, request, metric_names=metric_names, parameter_names=param_names)
    filters = RunFilterForm.filters_of(query)
    table = runs_table.Table.from_query(query, filters, metric_names, param_names)
    context = {"access": access, "workspace": access.workspace, "experiment": experiment, "table": table}
    if query["children_of"] is not None:
        parent = get_object_or_404(Run, experiment=experiment, pk=query["children_of"])
        context["runs"], context["child_total"] = runs_table.children(parent)
        context["parent"] = parent
        template = "runs/_runs_table.html#child-rows"
    else:
        try:
            page = runs_table.page_for_query(experiment, query, filters, PAGE_SIZE)
        except runs_table.TableError as exc:
            raise BadRequest(str(exc)) from None
        counts = runs_table.status_counts(experiment)
        # the status links count top-level runs (the table's rows); say how many runs there are with child runs too
        context["run_counts"] = {"top": sum(counts.values()), "total": Run.objects.filter(experiment=experiment).count()}
        context.update(
            runs=page.runs,
            pager=table.pager(page),
            metric_names=metric_names,
            param_names=param_names,
            status_filter=query["status"],
            status_links=table.status_links(counts, RunStatus.choices),
        )
        template = "runs/experiment_detail.html"
        if request.htmx and request.htmx.target == "runs-table":
            template += "#runs-table"
    runs_table.attach_parameter_cells(context["runs"], table.param_columns)
    runs_table.attach_metric_cells(context["runs"], table.columns)
    runs_table.attach_child_counts(context["runs"])
    return render(request, template, context)


@require_POST
@login_required
def experiment_archive(request, workspace: str, name: str):
    _, experiment = get_experiment_for_user(request, workspace, name, write=True)
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
    """The run page. Its tabs (`?tab=`) are parts of one page: Metrics, System and Children load the telemetry
    partial (runs/telemetry_views.py), Outputs and Snapshot their pane (`?pane=`), when first opened. An htmx request
    for `#run-summary` gets that part alone (286 once the run is final)."""
    access, run = get_run_for_user(request, workspace, run_id)
    query = valid_query(RunPageForm, request)
    context = {
        "access": access,
        "workspace": access.workspace,
        "run": run,
        "tab": query["tab"],
        "run_tabs": RUN_TABS,
        "server_now": timezone.now(),
        "timeline": run.status_changes.all(),
        # a local run uses a virtualenv of the definition, never the image: its status is no business of the run
        "environment_image": run.environment.image() if run.environment and run.compute_target.kind == "docker" else None,
    }
    if request.htmx and request.htmx.target == "run-summary":
        response = render(request, "runs/run_detail.html#run-summary", context)
        if run.is_final:
            response.status_code = HTMX_STOP_POLLING
        return response
    pane = query["pane"] or (query["tab"] if query["tab"] in ("outputs", "snapshot") else "")
    if pane == "outputs":
        context["files"] = storage.list_stored_files(run.pk)
    elif pane == "snapshot":
        context["tree"] = snapshots.file_tree(run.snapshot)
    if query["pane"]:
        return render(request, f"runs/run_detail.html#{pane}-pane", context)
    log_path = storage.console_log_path(run.pk)
    if run.is_final:
        context["log_lines"], context["log_truncated"] = console.tail(log_path)
        context["log_size"] = console.size(log_path)
    context["parameters"] = parameters.of_run(run)
    context["git"] = git = RunGitInfo.objects.filter(run=run).first()
    context["git_diff"] = gitinfo.diff_lines(git.diff) if git and git.diff else []
    context["git_diff_shown_bytes"] = len(git.diff.encode()) if git else 0
    return render(request, "runs/run_detail.html", context)


@require_POST
@login_required
def run_cancel(request, workspace: str, run_id: int):
    _, run = get_run_for_user(request, workspace, run_id, write=True)
    if run.request_cancel(reason=f"Canceled by {request.user.username}."):
        messages.success(request, "Cancel requested: the run is being stopped.")
    else:
        messages.info(request, f"The run already ended ({run.get_status_display()}).")
    return redirect("run_detail", workspace=workspace, run_id=run.pk)


def console_log_response(request, run: Run, query: dict):
    """The full console log as text; with `offset`, JSON display lines from that byte on (the polling fallback)."""
    path = storage.console_log_path(run.pk)
    if query["offset"] is not None:
        lines, next_offset = console.chunk(path, query["offset"])
        return JsonResponse({"lines": lines, "next_offset": next_offset, "status": run.status, "final": run.is_final})
    if not path.is_file():
        return HttpResponse("", content_type="text/plain; charset=utf-8")
    return file_response(
        request, open(path, "rb"), filename=f"run-{run.pk}-std_log.txt", as_attachment=query["download"],
        content_type="text/plain; charset=utf-8",
    )


@require_GET
@login_required
def run_log(request, workspace: str, run_id: int):
    _, run = get_run_for_user(request, workspace, run_id)
    return console_log_response(request, run, valid_query(LogQueryForm, request))


def stored_file_response(request, run: Run, path: str):
    stored = storage.resolve_stored_file(run.pk, path)
    if stored is None:
        raise Http404("No such file in this run.")
    # Always a download: a stored HTML or SVG file is never rendered in the studio's origin.
    return file_response(request, open(stored, "rb"), filename=stored.name)


@require_GET
@login_required
def run_file(request, workspace: str, run_id: int, path: str):
    _, run = get_run_for_user(request, workspace, run_id)
    return stored_file_response(request, run, path)


def stored_files_zip(request, run: Run):
    return zip_response(request, storage.zip_members(run.pk), filename=f"run-{run.pk}-files.zip")


@require_GET
@login_required
def run_files_zip(request, workspace: str, run_id: int):
    _, run = get_run_for_user(request, workspace, run_id)
    return stored_files_zip(request, run)


@require_GET
@login_required
def snapshot_file(request, workspace: str, run_id: int):
    """One snapshot file shown in the viewer (text; an htmx request gets the viewer part alone) or downloaded."""
    access, run = get_run_for_user(request, workspace, run_id)
    query = valid_query(SnapshotFileForm, request)
    entry = run.snapshot.entry(query["path"])
    if entry is None:
        raise Http404("No such file in the snapshot.")
    handle = snapshots.open_blob(run.snapshot, entry["path"])
    if query["download"]:
        return file_response(request, handle, filename=entry["path"].rsplit("/", 1)[-1])
    with handle:
        data = handle.read(512 * 1024)
    text = None if b"\x00" in data else data.decode("utf-8", errors="replace")
    context = {"run": run, "workspace": access.workspace, "entry": entry, "text": text, "cut": entry["size"] > len(data)}
    template = "runs/snapshot_file.html#viewer" if request.htmx else "runs/snapshot_file.html"
    return render(request, template, context)


def snapshot_zip_response(request, run: Run):
    return zip_response(request, snapshots.zip_members(run.snapshot), filename=f"run-{run.pk}-snapshot.zip", compress=True)


@require_GET
@login_required
def snapshot_zip(request, workspace: str, run_id: int):
    _, run = get_run_for_user(request, workspace, run_id)
    return snapshot_zip_response(request, run)
