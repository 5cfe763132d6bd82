"""Downloads through the real ASGI server arrive whole, as attachments, streamed in chunks."""

from __future__ import annotations

import os

import httpx
import pytest
from django.db import transaction
from django.urls import reverse

from runs import storage
from runs.models import Run, RunStatus
from tests.conftest import make_run as _make_run
from tests.runs.test_live_logs_e2e import session_cookies

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def make_run(workspace, user):
    """A run no worker will execute: it is committed already ended (a queued one would be run by a worker other
    tests started, whose console would replace the one written here)."""
    with transaction.atomic():
        run = _make_run(workspace, user)
        Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED)
    return run


def test_a_large_output_downloads_whole_over_asgi(cast, workspace, web):
    run = make_run(workspace, cast["carol"])
    payload = os.urandom(3 * 1024 * 1024 + 17)
    target = storage.run_dir(run.pk) / "outputs" / "weights.bin"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(payload)
    url = web + reverse("run_file", args=[workspace.name, run.pk, "outputs/weights.bin"])
    with httpx.stream("GET", url, cookies=session_cookies(cast["bob"]), timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(len(payload))
        assert response.headers["content-disposition"] == 'attachment; filename="weights.bin"'
        chunks = list(response.iter_raw())
    assert b"".join(chunks) == payload
    assert len(chunks) > 1


def test_the_full_log_is_served_as_text_over_asgi(cast, workspace, web):
    run = make_run(workspace, cast["carol"])
    log = storage.console_log_path(run.pk)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(50_000)))
    url = web + reverse("run_log", args=[workspace.name, run.pk])
    response = httpx.get(url, cookies=session_cookies(cast["bob"]), timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.text.splitlines()[-1] == "line 49999"
