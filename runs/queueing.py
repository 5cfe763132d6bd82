"""Sending a run's work to the queue of its compute target (by task name: this module imports no task).

A message may be lost (Redis restarted without it) or sent twice: the claim and the take-over are conditional, so a
duplicate does nothing, and `execution.requeue_stale_queued` sends again what waited too long.
"""

from __future__ import annotations

import logging

from celery import current_app
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)


def enqueue(run) -> bool:
    """Ask a worker of the run's target to start it. False when the broker cannot be reached: the run stays Queued
    and is sent again once it can."""
    return _send("runs.tasks.execute_run", run)


def request_adoption(run) -> bool:
    """Ask a worker of the run's target to take the run over and watch it to the end."""
    return _send("runs.tasks.adopt_run", run)


def _send(task: str, run) -> bool:
    try:
        current_app.send_task(task, args=[run.pk], queue=run.compute_target.queue)
    except OperationalError:
        logger.warning("Could not reach the broker to send %s for run %s; it is sent again later", task, run.pk,
                       exc_info=True)
        return False
    return True
