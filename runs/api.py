"""REST routes for runs, under /api/v1/workspaces/<workspace>/runs: what the submit form does, for scripts and CLIs.

POST takes the submit form's fields as multipart (`source` is the file; `environment` is NAME or NAME:VERSION, or
`packages` lists pip requirements) and answers 201 with the run; errors are 400 `{"errors": {field: [messages]}}`.
GET .../runs/<id> answers the run's status and configuration.
"""

from __future__ import annotations

from django.http import JsonResponse
from django.urls import reverse

from runs.forms import SubmitRunForm
from runs.models import Run
from studio.api_auth import ApiDenied, api_view


def run_json(run: Run) -> dict:
    environment = run.environment
    return {
        "id": run.pk,
        "experiment": run.experiment.name,
        "display_name": run.display_name,
        "status": run.status,
        "reason": run.reason,
        "exit_code": run.exit_code,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "ended_at": run.ended_at.isoformat() if run.ended_at else None,
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
        "url": reverse("run_detail", args=[run.workspace.name, run.pk]),
    }


@api_view("POST", write=True)
def submit(request, membership):
    form = SubmitRunForm(request.POST, request.FILES, workspace=membership.workspace)
    try:
        if not form.is_valid():
            errors = {field: [str(e) for e in messages] for field, messages in form.errors.items()}
            return JsonResponse({"errors": errors}, status=400)
        run = form.submit(request.user)
    finally:
        form.discard()
    run = Run.objects.select_related("experiment", "compute_target", "environment", "workspace").get(pk=run.pk)
    return JsonResponse(run_json(run), status=201)


@api_view("GET")
def detail(request, membership, run_id: int):
    run = (
        Run.objects.select_related("experiment", "compute_target", "environment", "workspace")
        .filter(pk=run_id, workspace=membership.workspace)
        .first()
    )
    if run is None:
        raise ApiDenied(404, f"No run {run_id} in this workspace.")
    return JsonResponse(run_json(run))
