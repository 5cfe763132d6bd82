"""A run's console log: the full text, a download, and JSON chunks from a byte offset (the polling fallback)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs import storage
from runs.models import Run, RunStatus
from tests.conftest import assert_sent_to_sign_in, login, make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


LOG = b"epoch 1\n\x1b[32mgreen\x1b[0m <b>bold</b>\npartial"


@pytest.fixture
def run(cast, workspace) -> Run:
    return make_run(workspace, cast["carol"], experiment="mnist")


@pytest.fixture
def log(run):
    path = storage.console_log_path(run.pk)
    path.parent.mkdir(parents=True)
    path.write_bytes(LOG)
    return path


def url(run) -> str:
    return f"/w/lab/runs/{run.pk}/log/"


def body(response) -> bytes:
    data = b"".join(response.streaming_content) if response.streaming else response.content
    return data


def test_it_is_at_the_expected_url(run):
    assert reverse("run_log", args=["lab", run.pk]) == url(run)


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_gives_every_member_the_full_log_as_plain_text(client, cast, run, log, who):
    login(client, cast[who])
    response = client.get(url(run))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert not response.get("Content-Disposition", "").startswith("attachment")
    assert body(response) == LOG


def test_it_offers_the_log_as_a_download(client, cast, run, log):
    login(client, cast["bob"])
    response = client.get(url(run), {"download": "1"})
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.pk}-std_log.txt"'
    assert body(response) == LOG


def test_it_answers_an_empty_text_before_the_run_wrote_anything(client, cast, run):
    login(client, cast["bob"])
    response = client.get(url(run))
    assert response.status_code == 200 and body(response) == b""


def test_it_hides_the_workspace_from_an_outsider(client, cast, run, log):
    login(client, cast["charlie"])
    response = client.get(url(run))
    assert response.status_code == 404
    assert b"epoch 1" not in body(response)


def test_it_answers_404_for_a_run_of_another_workspace(client, cast, run, log):
    from studio.models import Workspace

    foreign = make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret")
    login(client, cast["alice"])
    assert client.get(f"/w/lab/runs/{foreign.pk}/log/").status_code == 404
    login(client, cast["charlie"])
    assert client.get(f"/w/elsewhere/runs/{run.pk}/log/").status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, run, log):
    assert_sent_to_sign_in(client.get(url(run)), url(run))


def test_it_refuses_a_post(client, cast, run, log):
    login(client, cast["alice"])
    assert client.post(url(run)).status_code == 405


def test_an_offset_gives_the_whole_lines_from_there_as_json(client, cast, run, log):
    login(client, cast["bob"])
    data = client.get(url(run), {"offset": "0"}).json()
    assert data == {
        "lines": ["epoch 1", "green <b>bold</b>"],
        "next_offset": LOG.rindex(b"\n") + 1,
        "status": "Queued",
        "final": False,
    }
    rest = client.get(url(run), {"offset": str(data["next_offset"])}).json()
    assert rest["lines"] == [] and rest["next_offset"] == data["next_offset"]
    assert client.get(url(run), {"offset": "8"}).json()["lines"] == ["green <b>bold</b>"]


def test_the_json_says_when_the_run_is_final(client, cast, run, log):
    run.transition(RunStatus.COMPLETED, from_states=(RunStatus.QUEUED,))
    login(client, cast["bob"])
    data = client.get(url(run), {"offset": "0"}).json()
    assert data["status"] == "Completed" and data["final"] is True


def test_an_offset_past_the_end_is_clamped_and_one_before_the_start_refused(client, cast, run, log):
    login(client, cast["bob"])
    assert client.get(url(run), {"offset": "99999999"}).json()["next_offset"] == len(LOG)
    response = client.get(url(run), {"offset": "-5"})
    assert response.status_code == 400 and "offset" in response.content.decode()


def test_an_offset_before_the_log_exists_gives_nothing(client, cast, run):
    login(client, cast["bob"])
    assert client.get(url(run), {"offset": "0"}).json()["lines"] == []


@pytest.mark.parametrize("offset", ["abc", "1.5", "", "0x10"])
def test_it_answers_400_for_a_bad_offset(client, cast, run, log, offset):
    login(client, cast["bob"])
    assert client.get(url(run), {"offset": offset}).status_code == 400


def test_the_polling_fallback_shows_an_enormous_line_cut_with_the_live_views_note(client, cast, run, settings):
    """A 10 MB line is one display line, cut as the live view cuts it (never empty, never in pieces)."""
    from studio.console import TRUNCATED_NOTE

    data = b"before\n" + b"x" * 10_000_000 + b"\nafter\n"
    path = storage.console_log_path(run.pk)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    login(client, cast["bob"])
    lines, offset = [], 0
    while True:
        page = client.get(url(run), {"offset": str(offset)}).json()
        lines += page["lines"]
        if page["next_offset"] == offset:
            break
        offset = page["next_offset"]
    assert offset == len(data)
    limit = settings.STUDIO_LOG_LIVE_LINE_BYTES
    assert lines == ["before", "x" * limit + TRUNCATED_NOTE, "after"]


def test_an_enormous_line_still_being_written_is_not_shown_until_it_ends(client, cast, run):
    path = storage.console_log_path(run.pk)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"before\n" + b"x" * 3_000_000)
    login(client, cast["bob"])
    first = client.get(url(run), {"offset": "0"}).json()
    assert first["lines"] == ["before"] and first["next_offset"] == 7
    assert client.get(url(run), {"offset": "7"}).json() | {"status": None} == {
        "lines": [], "next_offset": 7, "status": None, "final": False}
    with open(path, "ab") as handle:
        handle.write(b"\n")
    lines = client.get(url(run), {"offset": "7"}).json()["lines"]
    assert len(lines) == 1 and lines[0].startswith("x" * 1000) and lines[0].endswith("the full line is in the log file]")
