"""A run's page: configuration, status, the log tail of a final run, stored files, the snapshot and the polled summary."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs import storage
from runs.models import Run, RunStatus
from tests.conftest import assert_sent_to_sign_in, login, make_run, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


HTMX = {"HX-Request": "true"}


@pytest.fixture
def run(cast, workspace) -> Run:
    return make_run(
        workspace,
        cast["carol"],
        experiment="mnist",
        arguments=["--lr", "0.1"],
        env_vars={"SEED": "7"},
        max_duration_seconds=900,
        display_name="baseline",
        tags={"team": "vision"},
    )


def url(run) -> str:
    return f"/w/lab/runs/{run.pk}/"


def write_log(run, data: bytes):
    path = storage.console_log_path(run.pk)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def finish(run, status=RunStatus.COMPLETED, **fields) -> Run:
    assert run.transition(status, from_states=(RunStatus.QUEUED,), **fields)
    return run


def test_it_is_at_the_expected_url(run):
    assert reverse("run_detail", args=["lab", run.pk]) == url(run)


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_shows_the_run_to_every_member(client, cast, run, who):
    login(client, cast[who])
    response = client.get(url(run))
    assert response.status_code == 200
    assert f'<h1>baseline <span class="muted">#{run.pk}</span></h1>' in text(response)


def test_it_hides_the_workspace_from_an_outsider(client, cast, run):
    login(client, cast["charlie"])
    assert client.get(url(run)).status_code == 404


def test_it_answers_404_for_a_run_of_another_workspace(client, cast, run):
    from studio.models import Workspace

    foreign = make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret")
    login(client, cast["alice"])
    assert client.get(f"/w/lab/runs/{foreign.pk}/").status_code == 404
    login(client, cast["charlie"])
    assert client.get(f"/w/elsewhere/runs/{run.pk}/").status_code == 404


def test_it_answers_404_for_an_unknown_run(client, cast, run):
    login(client, cast["alice"])
    assert client.get(f"/w/lab/runs/{run.pk + 1000}/").status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, run):
    assert_sent_to_sign_in(client.get(url(run)), url(run))


def test_it_refuses_a_post(client, cast, run):
    login(client, cast["alice"])
    assert client.post(url(run)).status_code == 405


def test_it_shows_the_configuration(client, cast, run):
    login(client, cast["bob"])
    page = text(client.get(url(run)))
    assert '<a href="/w/lab/experiments/mnist/">mnist</a>' in page
    assert "<code>train.py</code>" in page
    assert '<code class="arg">--lr</code> <code class="arg">0.1</code>' in page
    assert "<code>SEED=7</code>" in page
    assert 'local <span class="muted">(Local process)</span>' in page
    assert "900 s" in page
    assert '<span class="tag">team: vision</span>' in page
    assert "train.py: 1 file," in page
    assert 'data-status="Queued"' in page
    assert "by carol" in page


def test_a_live_run_page_follows_the_events_and_offers_cancel_to_writers(client, cast, run):
    login(client, cast["carol"])
    page = text(client.get(url(run)))
    assert f'data-events-url="/w/lab/runs/{run.pk}/events/"' in page
    assert 'id="cancel-form"' in page
    assert "live_console.js" in page
    assert f'hx-get="/w/lab/runs/{run.pk}/"' in page


def test_a_reader_sees_no_cancel_button(client, cast, run):
    login(client, cast["bob"])
    assert 'id="cancel-form"' not in text(client.get(url(run)))


def test_a_final_run_shows_its_log_tail_and_no_live_parts(client, cast, run):
    write_log(run, b"epoch 1 loss 0.9\nepoch 2 loss 0.5\r\ndone\n")
    finish(run, exit_code=0)
    login(client, cast["bob"])
    page = text(client.get(url(run)))
    assert '<span class="line">epoch 1 loss 0.9</span>\n<span class="line">epoch 2 loss 0.5</span>\n' in page
    assert '<span class="line">done</span>' in page
    assert "data-events-url" not in page and 'id="cancel-form"' not in page
    assert 'data-status="Completed"' in page
    assert '<span class="label">Exit code</span> 0' in page


@pytest.mark.parametrize("after", [b"", b"done\n"])
def test_a_final_run_shows_an_enormous_last_line_cut_with_the_live_views_note(client, cast, run, settings, after):
    """A 10 MB line at the end of the log (more than the tail reads) is shown from its start, cut, never dropped."""
    from studio.console import TRUNCATED_NOTE

    write_log(run, b"epoch 1\n" + b"y" * 10_000_000 + b"\n" + after)
    finish(run, exit_code=0)
    login(client, cast["bob"])
    page = text(client.get(url(run)))
    cut = "y" * settings.STUDIO_LOG_LIVE_LINE_BYTES + TRUNCATED_NOTE
    assert f'<span class="line">{cut}</span>' in page
    assert "y" * (settings.STUDIO_LOG_LIVE_LINE_BYTES + 1) not in page
    if after:
        assert f'<span class="line">{cut}</span>\n<span class="line">done</span>' in page


def test_a_final_run_without_output_says_so(client, cast, run):
    finish(run, RunStatus.FAILED, reason="Exit code 1.")
    login(client, cast["alice"])
    page = text(client.get(url(run)))
    assert "The script printed nothing." in page
    assert '<pre class="reason failed" id="run-reason">Exit code 1.</pre>' in page
    assert "The script wrote nothing under" in text(client.get(url(run), {"tab": "outputs"}))


def test_printed_markup_is_shown_as_text_and_ansi_codes_are_stripped(client, cast, run):
    write_log(run, b"<script>alert(1)</script>\n\x1b[31mred\x1b[0m\n<img src=x onerror=alert(2)>\n")
    finish(run)
    login(client, cast["alice"])
    raw = client.get(url(run)).content.decode()
    assert "<script>alert(1)</script>" not in raw and "<img src=x" not in raw
    assert '<span class="line">&lt;script&gt;alert(1)&lt;/script&gt;</span>' in raw
    assert '<span class="line">red</span>' in raw
    assert "\x1b" not in raw and "[31m" not in raw


def test_a_reason_with_markup_is_escaped(client, cast, run):
    finish(run, RunStatus.FAILED, reason="Traceback: <b>boom</b>")
    login(client, cast["alice"])
    raw = client.get(url(run)).content.decode()
    assert "<b>boom</b>" not in raw and "&lt;b&gt;boom&lt;/b&gt;" in raw


def test_it_lists_stored_files_and_the_snapshot_tree(client, cast, run):
    outputs = storage.run_dir(run.pk) / "outputs"
    outputs.mkdir(parents=True)
    (outputs / "model.pkl").write_bytes(b"x" * 10)
    finish(run)
    login(client, cast["bob"])
    page = text(client.get(url(run)))
    assert "outputs/model.pkl" not in page and 'hx-get="?pane=outputs" hx-trigger="studio:show once"' in page
    pane = text(client.get(url(run), {"pane": "outputs"}, headers={"HX-Request": "true"}))
    assert f'<a href="/w/lab/runs/{run.pk}/files/outputs/model.pkl">outputs/model.pkl</a>' in pane
    assert f"/w/lab/runs/{run.pk}/files.zip" in pane and "<html" not in pane
    page = text(client.get(url(run), {"tab": "outputs"}))  # opened on its tab, the pane is in the page
    assert f'<a href="/w/lab/runs/{run.pk}/files/outputs/model.pkl">outputs/model.pkl</a>' in page
    assert 'data-active="outputs"' in page and 'id="tab-outputs" data-tab="outputs" aria-controls="pane-outputs" aria-selected="true"' in page
    pane = text(client.get(url(run), {"pane": "snapshot"}, headers={"HX-Request": "true"}))
    assert f'href="/w/lab/runs/{run.pk}/snapshot/file/?path=train.py"' in pane
    assert f"/w/lab/runs/{run.pk}/snapshot.zip" in pane


def test_an_unknown_tab_shows_the_overview_and_an_unknown_pane_is_a_400(client, cast, run):
    login(client, cast["bob"])
    assert 'data-active="overview"' in text(client.get(url(run), {"tab": "nope"}))
    assert client.get(url(run), {"pane": "nope"}).status_code == 400


def test_the_duration_of_an_active_run_carries_its_start_for_the_page_to_count_from(client, cast, run):
    assert run.transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED,))
    login(client, cast["bob"])
    page = text(client.get(url(run)))
    assert f'data-started="{run.started_at.timestamp():f}"' in page and "data-now=" in page
    assert run.transition(RunStatus.COMPLETED, from_states=(RunStatus.RUNNING,))
    assert "data-started" not in text(client.get(url(run)))


def test_the_page_of_a_live_run_refreshes_its_summary_in_place(client, cast, run):
    login(client, cast["bob"])
    page = client.get(url(run)).content.decode()
    assert f'hx-get="/w/lab/runs/{run.pk}/"' in page
    assert 'hx-swap="innerHTML"' in page and 'hx-sync="this:replace"' in page


def test_the_summary_part_of_a_live_run_is_only_the_summary(client, cast, run):
    login(client, cast["bob"])
    response = client.get(url(run), headers={**HTMX, "HX-Target": "run-summary"})
    assert response.status_code == 200
    body = response.content.decode().strip()
    assert "<html" not in body and "Configuration" not in body and "<section" not in body
    assert 'data-status="Queued"' in body and "Status timeline" in body


def test_the_summary_part_of_a_final_run_stops_the_polling(client, cast, run):
    finish(run, RunStatus.CANCELED, reason="Canceled by carol.")
    login(client, cast["bob"])
    response = client.get(url(run), headers={**HTMX, "HX-Target": "run-summary"})
    assert response.status_code == 286
    body = text(response)
    assert 'data-status="Canceled"' in body and "Canceled by carol." in body
    assert "hx-get" not in body
    assert "<strong>Queued</strong>" in body and "<strong>Canceled</strong>" in body


def test_the_summary_part_without_htmx_is_the_whole_page(client, cast, run):
    login(client, cast["bob"])
    response = client.get(url(run), {"part": "summary"})
    assert response.status_code == 200 and "<html" in response.content.decode()
