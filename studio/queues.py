"""The embedded worker (named `local@<host>` by `studioctl.py start`) serves every compute target's queue: the ones
that exist when it starts, and new ones as soon as a target is saved. Workers on other machines choose their queues
themselves (`studioctl.py worker --queues NAME`)."""

from __future__ import annotations

import logging
import socket

from celery.signals import worker_ready

from studio.celery import app
from studio.models import ComputeTarget

logger = logging.getLogger(__name__)
EMBEDDED_PREFIX = "local@"


def target_queues() -> set[str]:
    return set(ComputeTarget.objects.values_list("queue", flat=True).distinct())


@worker_ready.connect
def subscribe_embedded_worker(sender, **kwargs) -> None:
    if not sender.hostname.startswith(EMBEDDED_PREFIX):
        return
    current = {queue.name for queue in sender.app.amqp.queues.consume_from.values()}
    for queue in sorted(target_queues() - current):
        sender.app.control.add_consumer(queue, destination=[sender.hostname], reply=False)
        logger.info("Serving compute target queue %s", queue)


def serve_queue(queue: str) -> None:
    """Ask the embedded worker to serve a (new) target's queue; harmless when it already does."""
    try:
        app.control.add_consumer(queue, destination=[f"{EMBEDDED_PREFIX}{socket.gethostname()}"], reply=False)
    except Exception:  # the broker is down: the worker subscribes at its next start
        logger.warning("Could not ask the worker to serve queue %s", queue, exc_info=True)
