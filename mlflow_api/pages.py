"""The links an MLflow client prints open the studio's pages. After a run it prints "View run at
<tracking URI>/#/experiments/3/runs/<run id>" (MLflow's own UI): /mlflow/<workspace>/ is a page whose script reads
that fragment (a browser never sends it) and goes on to one of the two redirects below, which resolve MLflow's ids
to the studio's run and experiment pages. Pages, so a browser's session signs in as on every other page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from mlflow_api import tracking
from mlflow_api.errors import MlflowError
from studio.access import access_for


@login_required
@require_GET
def home(request, workspace: str):
    access = access_for(request, workspace)
    tracking_uri = request.build_absolute_uri(f"/mlflow/{access.workspace.name}")
    return render(request, "mlflow_api/links.html", {"workspace": access.workspace, "access": access,
                                                     "tracking_uri": tracking_uri})


@login_required
@require_GET
def run_link(request, workspace: str, run_id: str):
    access = access_for(request, workspace)
    try:
        run = tracking.resolve_run(access.workspace, run_id)
    except MlflowError as error:
        raise Http404(error.message) from None
    return redirect("run_detail", access.workspace.name, run.pk)


@login_required
@require_GET
def experiment_link(request, workspace: str, experiment_id: str):
    access = access_for(request, workspace)
    try:
        experiment = tracking.find_experiment(access.workspace, experiment_id)
    except MlflowError as error:
        raise Http404(error.message) from None
    return redirect("experiment_detail", access.workspace.name, experiment.name)
