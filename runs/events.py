"""Server-sent events for a run page: console lines and status changes from the run's live stream (`studio/sse.py`)."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from runs import live
from runs.access import get_run_for_user
from runs.models import FINAL_STATES, Run
from studio.sse import event_stream, sse_response, valid_last_event_id


def run_stream_response(run_pk: int, last_id: str | None):
    """The SSE response of a run's live stream (pages and the API)."""

    @sync_to_async
    def is_final() -> bool:
        return Run.objects.filter(pk=run_pk, status__in=FINAL_STATES).exists()

    return sse_response(event_stream(live.stream_key(run_pk), last_id, is_final, final_states=FINAL_STATES))


@require_GET
@login_required
async def run_events(request, workspace: str, run_id: int):
    await request.auser()
    _, run = await sync_to_async(get_run_for_user)(request, workspace, run_id)
    try:
        last_id = valid_last_event_id(request)
    except ValueError as error:
        return HttpResponse(str(error), status=400)
    return run_stream_response(run.pk, last_id)
