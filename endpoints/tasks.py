"""Periodic work of the endpoints app (on the control queue): request records and chart summaries older than
STUDIO_ENDPOINT_REQUEST_DAYS are deleted."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from endpoints.models import RequestRecord, StatsBucket


@shared_task(name="endpoints.tasks.purge_requests")
def purge_requests() -> int:
    cutoff = timezone.now() - timedelta(days=settings.STUDIO_ENDPOINT_REQUEST_DAYS)
    deleted = 0
    while True:  # in slices: a long table never holds one huge transaction
        ids = list(RequestRecord.objects.filter(at__lt=cutoff).values_list("pk", flat=True)[:10_000])
        if not ids:
            break
        deleted += RequestRecord.objects.filter(pk__in=ids).delete()[0]
    StatsBucket.objects.filter(start__lt=cutoff).delete()
    return deleted
