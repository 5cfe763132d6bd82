"""A run's snapshot as one zip, the same files as uploaded."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.urls import reverse

from runs import snapshots
from runs.models import Run
from runs.submission import submit_run
from tests.conftest import assert_sent_to_sign_in, login, make_run, zip_upload

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
    return f"/w/lab/runs/{run.pk}/snapshot.zip"


def test_it_is_at_the_expected_url(run):
    assert reverse("snapshot_zip", args=["lab", run.pk]) == url(run)


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_every_member_downloads_the_snapshot_as_uploaded(client, cast, run, who):
    login(client, cast[who])
    response = client.get(url(run))
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.pk}-snapshot.zip"'
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as zipped:
        files = {name: zipped.read(name) for name in zipped.namelist()}
    expected = {name: data if isinstance(data, bytes) else data.encode() for name, data in FILES.items()}
    assert files == expected


def test_it_answers_404_for_a_run_of_another_workspace(client, cast, run):
    from studio.models import Workspace

    foreign = make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret")
    login(client, cast["alice"])
    assert client.get(f"/w/lab/runs/{foreign.pk}/snapshot.zip").status_code == 404


def test_it_hides_the_workspace_from_an_outsider(client, cast, run):
    login(client, cast["charlie"])
    assert client.get(url(run)).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, run):
    assert_sent_to_sign_in(client.get(url(run)), url(run))


def test_it_refuses_a_post(client, cast, run):
    login(client, cast["alice"])
    assert client.post(url(run)).status_code == 405
