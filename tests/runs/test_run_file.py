"""Downloading one stored file of a run: only files under the run's outputs/ and logs/, whatever the path says."""

from __future__ import annotations

import os

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
    """A run with outputs/model.txt, outputs/report.html and logs/std_log.txt, and secrets around it."""
    root = storage.run_dir(run.pk)
    (root / "outputs" / "nested").mkdir(parents=True)
    (root / "logs").mkdir()
    (root / "outputs" / "model.txt").write_bytes(b"weights")
    (root / "outputs" / "report.html").write_bytes(b"<script>alert(1)</script>")
    (root / "outputs" / "nested" / "a b.txt").write_bytes(b"spaced")
    (root / "logs" / "std_log.txt").write_bytes(b"hello\n")
    (root / "private.txt").write_bytes(SECRET)  # in the run dir, but not under outputs/ or logs/
    (data_dir / "secret_key").write_bytes(SECRET)
    other = storage.run_dir(run.pk + 1) / "outputs"
    other.mkdir(parents=True)
    (other / "theirs.txt").write_bytes(SECRET)
    return root


def url(run, path: str = "outputs/model.txt") -> str:
    return f"/w/lab/runs/{run.pk}/files/{path}"


def body(response) -> bytes:
    data = b"".join(response.streaming_content) if response.streaming else response.content
    return data


def test_it_is_at_the_expected_url(run):
    assert reverse("run_file", args=["lab", run.pk, "outputs/model.txt"]) == url(run)


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_every_member_downloads_a_stored_output(client, cast, run, stored, who):
    login(client, cast[who])
    response = client.get(url(run))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="model.txt"'
    assert body(response) == b"weights"


def test_it_serves_logs_and_nested_outputs(client, cast, run, stored):
    login(client, cast["bob"])
    assert body(client.get(url(run, "logs/std_log.txt"))) == b"hello\n"
    assert body(client.get(url(run, "outputs/nested/a%20b.txt"))) == b"spaced"


def test_an_html_output_is_always_a_download(client, cast, run, stored):
    login(client, cast["bob"])
    response = client.get(url(run, "outputs/report.html"))
    assert response["Content-Disposition"].startswith("attachment;")
    body(response)


def test_it_hides_the_workspace_from_an_outsider(client, cast, run, stored):
    login(client, cast["charlie"])
    response = client.get(url(run))
    assert response.status_code == 404
    assert b"weights" not in body(response)


def test_it_answers_404_for_a_run_of_another_workspace(client, cast, run, stored):
    from studio.models import Workspace

    foreign = make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret")
    theirs = storage.run_dir(foreign.pk) / "outputs"
    theirs.mkdir(parents=True, exist_ok=True)
    (theirs / "model.txt").write_bytes(SECRET)
    login(client, cast["alice"])
    response = client.get(f"/w/lab/runs/{foreign.pk}/files/outputs/model.txt")
    assert response.status_code == 404 and SECRET not in body(response)


def test_it_sends_an_anonymous_visitor_to_sign_in(client, run, stored):
    assert_sent_to_sign_in(client.get(url(run)), url(run))


def test_it_refuses_a_post(client, cast, run, stored):
    login(client, cast["alice"])
    assert client.post(url(run)).status_code == 405


@pytest.mark.parametrize(
    "path",
    [
        "outputs/missing.txt",
        "outputs",
        "outputs/nested",
        "private.txt",
        "../../secret_key",
        "outputs/../../../secret_key",
        "outputs/../private.txt",
        "outputs/../../../../../../etc/passwd",
        "%2e%2e/%2e%2e/secret_key",
        "..%2f..%2fsecret_key",
        "outputs/%2e%2e/%2e%2e/%2e%2e/secret_key",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "/{data_dir}/secret_key",
        "outputs/../../{other}/outputs/theirs.txt",
        "outputs/model.txt%00.png",
    ],
)
def test_it_never_serves_a_file_outside_the_runs_outputs_and_logs(client, cast, run, stored, data_dir, path):
    login(client, cast["alice"])
    path = path.format(data_dir=str(data_dir).lstrip("/"), other=run.pk + 1)
    response = client.get(url(run, path))
    assert response.status_code == 404
    content = body(response)
    assert SECRET not in content and b"root:" not in content


def test_it_never_follows_a_symlink_planted_in_the_run_dir(client, cast, run, stored, data_dir):
    os.symlink(data_dir / "secret_key", stored / "outputs" / "link.txt")
    os.symlink(stored / "private.txt", stored / "logs" / "inside.txt")
    os.symlink(data_dir, stored / "outputs" / "everything")
    login(client, cast["alice"])
    for path in ("outputs/link.txt", "logs/inside.txt", "outputs/everything/secret_key"):
        response = client.get(url(run, path))
        assert response.status_code == 404, path
        assert SECRET not in body(response)


def test_it_never_follows_a_symlinked_outputs_folder(client, cast, run, stored, data_dir):
    outside = data_dir / "outside"
    outside.mkdir()
    (outside / "loot.txt").write_bytes(SECRET)
    (stored / "logs" / "std_log.txt").unlink()
    (stored / "logs").rmdir()
    os.symlink(outside, stored / "logs")
    login(client, cast["alice"])
    response = client.get(url(run, "logs/loot.txt"))
    assert response.status_code == 404 and SECRET not in body(response)
