"""Thin Celery entry points: they take primary keys and hand off to runs/execution.py."""

from celery import shared_task

from runs import execution


@shared_task(name="runs.tasks.execute_run", acks_late=True, soft_time_limit=None, time_limit=None)
def execute_run(run_id: int) -> str:
    # No Celery time limit: the run enforces its own maximum duration and the reaper catches lost workers.
    return execution.execute_run(run_id)


@shared_task(name="runs.tasks.reap_lost_runs", soft_time_limit=50, time_limit=60)
def reap_lost_runs() -> int:
    return execution.reap_lost_runs()


@shared_task(name="runs.tasks.sweep_targets", soft_time_limit=110, time_limit=120)
def sweep_targets() -> int:
    return execution.sweep_targets()
