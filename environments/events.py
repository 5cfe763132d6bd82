"""Server-sent events for an image page: the build's log lines and status changes from its live stream.

Same entry format and helpers as every live stream (`studio/sse.py`). One difference: an image can be built more than
once (a rebuild), and its stream still holds the earlier build's final status. A fresh connection therefore starts at
the current build's `Queued` entry, so an old `Succeeded` never ends the live view of a new build.
"""

from __future__ import annotations

import redis
from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from environments import builds
from environments.access import get_image_for_user
from environments.models import BuildStatus, EnvironmentImage
from studio.redis_client import get_async_redis
from studio.sse import event_stream, sse_response, valid_last_event_id

FINAL_STATES = (BuildStatus.SUCCEEDED.value, BuildStatus.FAILED.value)
SCAN_ENTRIES = 2000  # how far back to look for the current build's start


def _just_before(entry_id: str) -> str:
    """The greatest possible stream id below `entry_id` (XREAD returns entries after the id it is given)."""
    millis, seq = (int(part) for part in entry_id.split("-"))
    if seq > 0:
        return f"{millis}-{seq - 1}"
    return f"{millis - 1}-18446744073709551615" if millis > 0 else "0-0"


async def current_build_start(key: str) -> str | None:
    """The id to read after so that the current build's entries come whole; None when the stream has no `Queued`."""
    client = get_async_redis()
    try:
        for entry_id, fields in await client.xrevrange(key, count=SCAN_ENTRIES):
            if fields.get(b"k") == b"status" and fields.get(b"v") == BuildStatus.QUEUED.value.encode():
                return _just_before(entry_id.decode())
        return None
    except redis.RedisError:
        return None  # the stream helper then tells the page that live updates are unavailable
    finally:
        await client.aclose()


def image_stream_response(image: EnvironmentImage, last_id: str | None):
    """The SSE response of an image's build (pages and the API); a fresh connection starts at the current build."""
    key = builds.stream_key(image.pk)

    @sync_to_async
    def is_final() -> bool:
        return EnvironmentImage.objects.filter(pk=image.pk, status__in=FINAL_STATES).exists()

    async def stream():
        start = last_id if last_id is not None else await current_build_start(key)
        async for message in event_stream(key, start, is_final, final_states=FINAL_STATES):
            yield message

    return sse_response(stream())


@require_GET
@login_required
async def image_events(request, workspace: str, image_id: int):
    await request.auser()
    _, image = await sync_to_async(get_image_for_user)(request, workspace, image_id)
    try:
        last_id = valid_last_event_id(request)
    except ValueError as error:
        return HttpResponse(str(error), status=400)
    return image_stream_response(image, last_id)
