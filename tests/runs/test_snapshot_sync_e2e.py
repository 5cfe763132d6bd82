"""The SDK's `upload_folder` against the real web server: a resubmission sends only the changed file, an interrupted
upload continues where it stopped, and a run is submitted with the snapshot."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from runs.models import Run, Snapshot
from studio.models import ApiToken
from tests.services import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk"))

from studio_sdk import _snapshot  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def token(cast, workspace) -> str:
    return ApiToken.issue(cast["carol"], "sync")[1]


@pytest.fixture
def project(tmp_path) -> Path:
    """30 source files, data the .amlignore leaves out, all written an hour ago (an old checkout)."""
    folder = tmp_path / "project"
    for index in range(30):
        target = folder / "src" / f"part{index // 10}" / f"module_{index}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(os.urandom(5000))
    (folder / "train.py").write_text("print('trained')\n")
    (folder / "data").mkdir()
    (folder / "data" / "big.bin").write_bytes(b"d" * 100_000)
    (folder / ".amlignore").write_text("data/\n*.tmp\n")
    (folder / "scratch.tmp").write_text("left out")
    an_hour_ago = time.time() - 3600
    for path in folder.rglob("*"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    return folder


def test_resubmitting_after_changing_one_file_sends_only_that_file(web, token, project, tmp_path):
    http = _snapshot.Http(web, token)
    cache = tmp_path / "hashes.json"
    first_id, first = _snapshot.upload_folder(http, "lab", project, hash_cache=cache)
    assert (first.files, first.ignored, first.ignore_file) == (32, 2, ".amlignore")
    assert first.files_sent == first.uploaded_files == 32 and first.bytes_sent == first.uploaded_bytes == first.bytes

    (project / "src" / "part1" / "module_13.py").write_bytes(b"changed = True\n")
    second_id, second = _snapshot.upload_folder(http, "lab", project, hash_cache=cache)
    assert second_id != first_id
    assert (second.hashed_files, second.files_sent, second.bytes_sent) == (1, 1, len(b"changed = True\n"))
    assert (second.uploaded_files, second.uploaded_bytes) == (1, len(b"changed = True\n"))  # counted on the server
    assert second.request_bytes < 20_000  # the manifest, twice

    snapshot = Snapshot.objects.get(pk=second_id)
    assert snapshot.source_name == "project" and snapshot.file_count == 32
    assert snapshot.entry("src/part1/module_13.py")["sha256"] == hashlib.sha256(b"changed = True\n").hexdigest()
    assert snapshot.entry("data/big.bin") is None and snapshot.entry(".amlignore") is not None

    # Unchanged, nothing is sent; without the cache every file is hashed again, still nothing is sent.
    _, third = _snapshot.upload_folder(http, "lab", project, hash_cache=False)
    assert (third.hashed_files, third.files_sent, third.bytes_sent) == (32, 0, 0)

    submitted = http.call("POST", "/workspaces/lab/runs", body=f"experiment=sync&snapshot_id={second_id}&"
                          "entry_script=train.py".encode(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert submitted.status == 201, submitted.body
    assert Run.objects.get(pk=submitted.json()["id"]).snapshot_id == second_id


class Interrupted(BaseException):
    """Stands for a client killed mid-upload."""


class FailingHttp(_snapshot.Http):
    """Raises `failure` on the `at`-th PUT, before sending it."""

    def __init__(self, *args, at: int, failure: BaseException, **kwargs):
        super().__init__(*args, **kwargs)
        self.at, self.failure, self.puts = at, failure, 0

    def request(self, method, path, **kwargs):
        if method == "PUT":
            self.puts += 1
            if self.puts == self.at:
                raise self.failure
        return super().request(method, path, **kwargs)


def test_an_interrupted_upload_continues_where_it_stopped(web, token, tmp_path, monkeypatch):
    monkeypatch.setattr(_snapshot, "CHUNK_BYTES", 256 * 1024)
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "model.bin").write_bytes(os.urandom(1024 * 1024))
    killed = FailingHttp(web, token, at=3, failure=Interrupted())
    with pytest.raises(Interrupted):
        _snapshot.upload_folder(killed, "lab", folder, threads=1, hash_cache=False)

    _, stats = _snapshot.upload_folder(_snapshot.Http(web, token), "lab", folder, hash_cache=False)
    assert stats.bytes_sent == 1024 * 1024 - 2 * 256 * 1024  # the two ranges the studio held were not sent again
    assert (stats.files_sent, stats.uploaded_files, stats.uploaded_bytes) == (1, 1, 1024 * 1024)


def test_a_failed_range_is_resumed_within_the_same_call(web, token, tmp_path, monkeypatch):
    monkeypatch.setattr(_snapshot, "CHUNK_BYTES", 256 * 1024)
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "model.bin").write_bytes(os.urandom(600 * 1024))
    flaky = FailingHttp(web, token, at=2, failure=ConnectionResetError("the network went away"))
    _, stats = _snapshot.upload_folder(flaky, "lab", folder, hash_cache=False)
    assert stats.files_sent == stats.uploaded_files == 1 and stats.uploaded_bytes == 600 * 1024


def test_a_connection_cut_mid_body_keeps_what_arrived(web, token, workspace):
    data = os.urandom(2 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    host, port = web.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall((f"PUT /api/v1/workspaces/lab/blobs/{digest} HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Token {token}\r\nContent-Type: application/octet-stream\r\n"
                      f"Content-Range: bytes 0-{len(data) - 1}/{len(data)}\r\nContent-Length: {len(data)}\r\n\r\n"
                      ).encode() + data[:700_000])
        time.sleep(0.3)
    http = _snapshot.Http(web, token)
    held = wait_until(lambda: http.json("GET", f"/workspaces/lab/blobs/{digest}")["received"] or None, 10,
                      "the server to keep the bytes of the cut request")
    assert 0 < held <= 700_000
    rest = http.call("PUT", f"/workspaces/lab/blobs/{digest}", body=data[held:], headers={
        "Content-Range": f"bytes {held}-{len(data) - 1}/{len(data)}"})
    assert rest.status == 200 and rest.json()["complete"], rest.body


def test_a_folder_over_the_studios_limits_is_refused_before_hashing(web, token, tmp_path, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    (folder / "a.py").write_text("a")
    http = _snapshot.Http(web, token)
    real = _snapshot._post

    def small_limits(http, path, payload, stats):
        answer = real(http, path, payload, stats)
        return {**answer, "max_files": 0} if path.endswith("/missing") else answer

    monkeypatch.setattr(_snapshot, "_post", small_limits)
    monkeypatch.setattr(_snapshot, "_hash_one", lambda item: pytest.fail("hashed"))
    with pytest.raises(_snapshot.SnapshotError, match="STUDIO_SNAPSHOT_MAX_FILES"):
        _snapshot.upload_folder(http, "lab", folder, hash_cache=False)


def test_a_refusal_names_what_to_fix(web, cast, workspace, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.py").write_text("a")
    reader = _snapshot.Http(web, ApiToken.issue(cast["bob"], "r")[1])
    with pytest.raises(_snapshot.SnapshotError) as refused:
        _snapshot.upload_folder(reader, "lab", folder, hash_cache=False)
    assert refused.value.status == 403
    outsider = _snapshot.Http(web, ApiToken.issue(cast["charlie"], "o")[1])
    with pytest.raises(_snapshot.SnapshotError) as hidden:
        _snapshot.upload_folder(outsider, "lab", folder, hash_cache=False)
    assert hidden.value.status == 404
