"""Submitting a run: store the snapshot, create the run as Queued (with the parameters its arguments hold and the git
information the client sent), enqueue it once the transaction commits."""

from __future__ import annotations

import logging

from django.db import transaction

from environments import builds
from environments.models import Environment
from runs import gitinfo, parameters
from runs.models import Experiment, ParameterSource, Run, RunStatus, RunStatusChange
from runs.queueing import enqueue
from runs.snapshots import StagedSnapshot
from studio.models import ComputeTarget, Workspace

logger = logging.getLogger(__name__)


def submit_run(
    workspace: Workspace,
    user,
    *,
    experiment_name: str,
    staged: StagedSnapshot,
    entry_script: str,
    compute_target: ComputeTarget,
    arguments: list[str] | None = None,
    env_vars: dict[str, str] | None = None,
    max_duration_seconds: int | None = None,
    display_name: str = "",
    tags: dict[str, str] | None = None,
    environment=None,
    packages: str = "",
    resources: dict | None = None,
    git: dict | None = None,
) -> Run:
    """Create the run as Queued and enqueue it after commit. Inline `packages` make an anonymous environment
    (found again by its hash); on a Docker target a managed environment's image starts building now. The arguments'
    `--name value` options become the run's parameters; `git` is checked git information (gitinfo.check)."""
    with transaction.atomic():
        if packages:
            environment = Environment.anonymous_for(workspace, packages, user)
        experiment, _ = Experiment.objects.get_or_create(
            workspace=workspace, name=experiment_name, defaults={"created_by": user}
        )
        snapshot = staged.commit(workspace, user)
        run = Run.objects.create(
            workspace=workspace,
            experiment=experiment,
            created_by=user,
            snapshot=snapshot,
            entry_script=entry_script,
            arguments=arguments or [],
            env_vars=env_vars or {},
            compute_target=compute_target,
            max_duration_seconds=max_duration_seconds,
            display_name=display_name,
            tags=tags or {},
            environment=environment,
            resources=resources or {},
            status=RunStatus.QUEUED,
        )
        parameters.store(run, parameters.from_arguments(run.arguments), source=ParameterSource.ARGUMENTS)
        if git:
            gitinfo.store(run, git)
        if environment is not None and compute_target.kind == ComputeTarget.Kind.DOCKER:
            builds.ensure_image(environment)
        RunStatusChange.objects.create(run=run, status=RunStatus.QUEUED, at=run.created_at)
        transaction.on_commit(lambda: enqueue(run))
    return run



