"""Thin Celery entry points for image builds (queue `builds`)."""

from celery import shared_task
from django.conf import settings

from environments import builds


@shared_task(name="environments.tasks.build_image", acks_late=True,
             soft_time_limit=settings.STUDIO_BUILD_TIMEOUT_SECONDS, time_limit=settings.STUDIO_BUILD_TIMEOUT_SECONDS + 60)
def build_image(image_id: int) -> str:
    return builds.build(image_id)
