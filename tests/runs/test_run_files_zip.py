"""Downloading all of a run's stored files (outputs/ and logs/) as one zip."""

from __future__ import annotations

import io
import os
import zipfile

import pytest
from django.urls import reverse

from runs import storage
from runs.models import Run
from tests.conftest import assert_sent_to_sign_in, login, make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


SECRET = b"TOP-SECRET-do-not-serve"


@pytest.fixture
def run(cast, workspace) -> Run:
    return make_run(workspace, cast["carol"], experiment="mnist")


@pytest.fixture
def stored(run, data_dir):
    root = storage.run_dir(run.pk)
    (root / "outputs" / "nested").mkdir(parents=True)
    (root / "logs").mkdir()
    (root / "outputs" / "model.txt").write_bytes(b"weights")
    (root / "outputs" / "nested" / "metrics.json").write_bytes(b'{"acc": 0.9}')
    (root / "logs" / "std_log.txt").write_bytes(b"hello\n")
    (root / "private.txt").write_bytes(SECRET)
    (data_dir / "secret_key").write_bytes(SECRET)
    return root


def url(run) -> str:
    return f"/w/lab/runs/{run.pk}/files.zip"


def archive(response) -> dict[str, bytes]:
    assert response.status_code == 200
    data = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        return {name: zipped.read(name) for name in zipped.namelist()}


def test_it_is_at_the_expected_url(run):
    assert reverse("run_files_zip", args=["lab", run.pk]) == url(run)


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_every_member_downloads_every_stored_file_in_a_zip(client, cast, run, stored, who):
    login(client, cast[who])
    response = client.get(url(run))
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.pk}-files.zip"'
    assert archive(response) == {
        "logs/std_log.txt": b"hello\n",
        "outputs/model.txt": b"weights",
        "outputs/nested/metrics.json": b'{"acc": 0.9}',
    }


def test_a_run_without_files_gives_an_empty_zip(client, cast, run):
    login(client, cast["bob"])
    assert archive(client.get(url(run))) == {}


def test_it_leaves_out_symlinks_planted_in_the_run_dir(client, cast, run, stored, data_dir):
    os.symlink(data_dir / "secret_key", stored / "outputs" / "link.txt")
    os.symlink(data_dir, stored / "outputs" / "everything")
    login(client, cast["alice"])
    files = archive(client.get(url(run)))
    assert set(files) == {"logs/std_log.txt", "outputs/model.txt", "outputs/nested/metrics.json"}
    assert SECRET not in b"".join(files.values())


def test_it_never_follows_a_symlinked_outputs_folder(client, cast, run, stored, data_dir):
    outside = data_dir / "outside"
    outside.mkdir()
    (outside / "loot.txt").write_bytes(SECRET)
    (stored / "logs" / "std_log.txt").unlink()
    (stored / "logs").rmdir()
    os.symlink(outside, stored / "logs")
    login(client, cast["alice"])
    files = archive(client.get(url(run)))
    assert "logs/loot.txt" not in files
    assert SECRET not in b"".join(files.values())


def test_it_hides_the_workspace_from_an_outsider(client, cast, run, stored):
    login(client, cast["charlie"])
    assert client.get(url(run)).status_code == 404


def test_it_answers_404_for_a_run_of_another_workspace(client, cast, run, stored):
    from studio.models import Workspace

    foreign = make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret")
    login(client, cast["alice"])
    assert client.get(f"/w/lab/runs/{foreign.pk}/files.zip").status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, run, stored):
    assert_sent_to_sign_in(client.get(url(run)), url(run))


def test_it_refuses_a_post(client, cast, run, stored):
    login(client, cast["alice"])
    assert client.post(url(run)).status_code == 405
