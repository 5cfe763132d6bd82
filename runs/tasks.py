"""Thin Celery entry points: they take primary keys and hand off to runs/execution.py.

`execute_run` and `adopt_run` go to the queue of the run's compute target and last as long as the run. The periodic
ones (reaper, sweeper, requeue) go to the `control` queue, served by a worker process of its own, so a pool busy
watching runs never starves them (CELERY_TASK_ROUTES).
"""

import logging

from celery import shared_task
from celery.signals import worker_ready

from runs import execution

logger = logging.getLogger(__name__)


@shared_task(name="runs.tasks.execute_run", acks_late=True, soft_time_limit=None, time_limit=None)
def execute_run(run_id: int) -> str:
    # No Celery time limit: the run enforces its own maximum duration, and a worker that dies is replaced by
    # adoption (the message, acknowledged late, comes back after the broker's visibility timeout and finds the run
    # claimed already).
    return execution.execute_run(run_id)


@shared_task(name="runs.tasks.adopt_run", acks_late=True, soft_time_limit=None, time_limit=None)
def adopt_run(run_id: int) -> str:
    return execution.adopt_run(run_id)


@shared_task(name="runs.tasks.reap_lost_runs", soft_time_limit=50, time_limit=60)
def reap_lost_runs() -> int:
    return execution.reap_lost_runs()


@shared_task(name="runs.tasks.sweep_targets", soft_time_limit=110, time_limit=120)
def sweep_targets() -> int:
    return execution.sweep_targets()


@shared_task(name="runs.tasks.requeue_stale_queued", soft_time_limit=50, time_limit=60)
def requeue_stale_queued() -> int:
    return execution.requeue_stale_queued()


@worker_ready.connect
def adopt_orphans(sender, **kwargs) -> None:
    """A worker started after one that was killed takes its runs over at once, not after the reaper's delay."""
    try:
        execution.adopt_orphans_of_this_host()
    except Exception:  # the database may not be reachable yet: the reaper catches up
        logger.warning("Could not look for runs to adopt at start", exc_info=True)
