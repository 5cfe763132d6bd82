"""One file of a run's snapshot: shown in the viewer (text), or downloaded."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs import snapshots
from runs.models import Run
from runs.submission import submit_run
from tests.conftest import assert_sent_to_sign_in, login, make_run, text, zip_upload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


FILES = {
    "train.py": "print('<b>hello</b>')\n",
    "src/util.py": "X = 1\n",
    "data/weights.bin": b"\x00\x01\x02binary",
    "notes/long.txt": "x" * (600 * 1024),
}


@pytest.fixture
def run(cast, workspace) -> Run:
    """A run whose snapshot holds several files, submitted the way the form submits a zip."""
    staged = snapshots.stage_upload(zip_upload(FILES))
    target = workspace.compute_targets.get(name="local")
    return submit_run(
        workspace, cast["carol"], experiment_name="mnist", staged=staged, entry_script="train.py", compute_target=target
    )


def url(run) -> str:
    return f"/w/lab/runs/{run.pk}/snapshot/file/"


def test_it_is_at_the_expected_url(run):
    assert reverse("snapshot_file", args=["lab", run.pk]) == url(run)


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_shows_a_text_file_to_every_member(client, cast, run, who):
    login(client, cast[who])
    response = client.get(url(run), {"path": "src/util.py"})
    assert response.status_code == 200
    page = text(response)
    assert "<html" in page
    assert '<pre class="code">X = 1\n</pre>' in page
    assert "<code>src/util.py</code>" in page
    assert f'href="/w/lab/runs/{run.pk}/snapshot/file/?path=src/util.py&download=1"' in page


def test_it_shows_the_scripts_markup_as_text(client, cast, run):
    login(client, cast["bob"])
    raw = client.get(url(run), {"path": "train.py"}).content.decode()
    assert "<b>hello</b>" not in raw
    assert "print(&#x27;&lt;b&gt;hello&lt;/b&gt;&#x27;)" in raw


def test_an_htmx_request_gets_only_the_viewer(client, cast, run):
    login(client, cast["bob"])
    response = client.get(url(run), {"path": "src/util.py"}, headers={"HX-Request": "true"})
    body = response.content.decode().strip()
    assert body.startswith('<div class="viewer-head">')
    assert "<html" not in body and '<pre class="code">X = 1\n</pre>' in body


def test_it_does_not_show_a_binary_file(client, cast, run):
    login(client, cast["bob"])
    page = text(client.get(url(run), {"path": "data/weights.bin"}))
    assert "A binary file: download it to see it." in page
    assert '<pre class="code">' not in page


def test_it_shows_the_start_of_a_long_file_and_says_so(client, cast, run):
    login(client, cast["bob"])
    page = text(client.get(url(run), {"path": "notes/long.txt"}))
    assert "The file is longer than shown" in page
    assert page.count("x" * 1024) == 512


def test_it_downloads_a_file(client, cast, run):
    login(client, cast["bob"])
    response = client.get(url(run), {"path": "data/weights.bin", "download": "1"})
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="weights.bin"'
    assert b"".join(response.streaming_content) == FILES["data/weights.bin"]


@pytest.mark.parametrize(
    "path",
    [None, "", "nothing.py", "src", "src/", "/train.py", "./train.py", "../train.py", "src/../train.py", "TRAIN.PY"],
)
def test_it_answers_404_for_a_path_not_in_the_snapshot(client, cast, run, path):
    login(client, cast["alice"])
    query = {} if path is None else {"path": path}
    assert client.get(url(run), query).status_code == 404
    assert client.get(url(run), {**query, "download": "1"}).status_code == 404


def test_it_answers_404_for_a_run_of_another_workspace(client, cast, run):
    from studio.models import Workspace

    foreign = make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret")
    login(client, cast["alice"])
    assert client.get(f"/w/lab/runs/{foreign.pk}/snapshot/file/", {"path": "train.py"}).status_code == 404


def test_it_hides_the_workspace_from_an_outsider(client, cast, run):
    login(client, cast["charlie"])
    assert client.get(url(run), {"path": "train.py"}).status_code == 404
    assert client.get(url(run), {"path": "train.py", "download": "1"}).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, run):
    assert_sent_to_sign_in(client.get(url(run)), url(run))


def test_it_refuses_a_post(client, cast, run):
    login(client, cast["alice"])
    assert client.post(url(run) + "?path=train.py").status_code == 405
