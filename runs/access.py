"""Fetching experiments and runs for a user: the one way pages and API routes do it (see `studio/access.py`)."""

from __future__ import annotations

from django.http import HttpRequest

from runs.models import Experiment, Run
from studio.access import Access, get_in_workspace

RUN_RELATED = ("experiment", "compute_target", "snapshot", "created_by", "environment", "workspace", "parent")


def get_run_for_user(request: HttpRequest, workspace: str, run_id: int, *, write: bool = False) -> tuple[Access, Run]:
    return get_in_workspace(
        request, workspace, Run.objects.select_related(*RUN_RELATED), write=write,
        missing=f"No run {run_id} in this workspace.", pk=run_id,
    )


def get_experiment_for_user(
    request: HttpRequest, workspace: str, name: str, *, write: bool = False
) -> tuple[Access, Experiment]:
    return get_in_workspace(
        request, workspace, Experiment, write=write, missing=f"No experiment named {name[:255]!r} in this workspace.",
        name=name,
    )
