"""The Compute page: where a workspace's runs execute. Members see the targets; owners and contributors add, edit,
test and remove them."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError, transaction
from django.db.models import Count, ProtectedError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from studio.access import get_rw_workspace_for_user, get_workspace_for_user
from studio.compute_forms import ComputeTargetForm, is_builtin
from studio.docker_engine import connection_report
from studio.models import ComputeTarget
from studio.queues import serve_queue
from studio.sandbox import isolation


def _get_target(access, target_id: int) -> ComputeTarget:
    return get_object_or_404(ComputeTarget, pk=target_id, workspace=access.workspace)


def limits_summary(target: ComputeTarget) -> str:
    """ "2 CPUs · 4096 MB · GPUs: all · shm 256 MB", or "" when the target sets no limit."""
    parts = []
    if target.cpu_limit is not None:
        parts.append(f"{target.cpu_limit:g} CPU{'' if target.cpu_limit == 1 else 's'}")
    if target.memory_limit_mb is not None:
        parts.append(f"{target.memory_limit_mb} MB")
    if target.gpus:
        parts.append(f"GPUs: {target.gpus}")
    if target.shm_size_mb is not None:
        parts.append(f"shm {target.shm_size_mb} MB")
    return " · ".join(parts)


def _used_by(count: int) -> str:
    return "1 run uses it" if count == 1 else f"{count} runs use it"


@require_GET
@login_required
def compute_list(request, workspace: str):
    access = get_workspace_for_user(request, workspace)
    targets = ComputeTarget.objects.filter(workspace=access.workspace).annotate(run_count=Count("runs"))
    rows = [{"target": target, "limits": limits_summary(target), "builtin": is_builtin(target)} for target in targets]
    return render(request, "studio/compute_list.html", {"access": access, "workspace": access.workspace, "rows": rows,
                                                        "isolation": isolation()})


@require_http_methods(["GET", "POST"])
@login_required
def compute_edit(request, workspace: str, target_id: int | None = None):
    """Adds a target (compute_new, no target_id) or edits one."""
    access = get_rw_workspace_for_user(request, workspace)
    target = _get_target(access, target_id) if target_id is not None else ComputeTarget()
    target_name = target.name  # the form writes typed values into the instance; the title keeps the stored name
    form = ComputeTargetForm(request.POST or None, instance=target, workspace=access.workspace)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                target = form.save()
        except IntegrityError:  # someone took the name between the check and the save
            form.add_error("name", "There is already a target with this name in this workspace: choose another name.")
        else:
            transaction.on_commit(lambda: serve_queue(target.queue))
            verb = "saved" if target_id is not None else "added"
            messages.success(request, f"Compute target {target.name} {verb}. Its runs go to the queue {target.queue}.")
            return redirect("compute_list", workspace=workspace)
    return render(
        request,
        "studio/compute_edit.html",
        {"access": access, "workspace": access.workspace, "form": form, "editing": target_name},
        status=400 if form.errors else 200,
    )


@require_POST
@login_required
def compute_test(request, workspace: str, target_id: int):
    """Connects to a Docker target's engine. htmx gets the result as a fragment; a plain form post, a message.
    Only owners read what the engine answered or why it failed (`connection_report`)."""
    access = get_rw_workspace_for_user(request, workspace)
    target = _get_target(access, target_id)
    connected, report = connection_report(target, owner=access.is_owner)
    summary, error = (report, "") if connected else ("", report)
    if request.htmx:
        return render(
            request,
            "studio/compute_list.html#test-result",
            {"workspace": access.workspace, "target": target, "summary": summary, "error": error},
        )
    if error:
        messages.error(request, f"{target.name}: {error}")
    else:
        messages.success(request, f"{target.name}: {summary}")
    return redirect("compute_list", workspace=workspace)


@require_POST
@login_required
def compute_delete(request, workspace: str, target_id: int):
    """Removes a target no run uses. Runs keep their target for good, so a used target stays."""
    access = get_rw_workspace_for_user(request, workspace)
    target = _get_target(access, target_id)
    if is_builtin(target):
        messages.error(request, "The built-in local target cannot be removed: new runs use it by default.")
        return redirect("compute_list", workspace=workspace)
    used_by = target.runs.count()
    if used_by:
        messages.error(
            request,
            f"{target.name} cannot be removed: {_used_by(used_by)}, and runs keep their target. Edit it instead.",
        )
        return redirect("compute_list", workspace=workspace)
    try:
        target.delete()
    except ProtectedError as exc:  # a run was submitted to it in the meantime
        messages.error(request, f"{target.name} cannot be removed: {_used_by(len(exc.protected_objects))}.")
        return redirect("compute_list", workspace=workspace)
    messages.success(request, f"Compute target {target.name} removed.")
    return redirect("compute_list", workspace=workspace)
