"""Snapshots sent as blobs (runs/snapshot_sync.py): what is missing, resumable blob uploads, snapshots made from a
manifest, and runs submitted with them; nothing a workspace learns about another's content."""

from __future__ import annotations

import hashlib
import io
import os
import time

import pytest

from runs import snapshot_sync, snapshots
from runs.models import Run, Snapshot
from studio import blobs
from studio.models import ApiToken, Workspace
from tests.conftest import py_upload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
API = "/api/v1/workspaces"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(path: str, data: bytes) -> dict:
    return {"path": path, "sha256": sha(data), "size": len(data)}


@pytest.fixture
def carol_token(cast) -> dict:
    return {"Authorization": f"Token {ApiToken.issue(cast['carol'], 'sync')[1]}"}


@pytest.fixture
def charlie_token(cast) -> dict:
    return {"Authorization": f"Token {ApiToken.issue(cast['charlie'], 'sync')[1]}"}


def missing(client, headers, files, ws="lab"):
    response = client.post(f"{API}/{ws}/snapshots/missing", {"files": files}, content_type="application/json",
                           headers=headers)
    assert response.status_code == 200, response.content
    return response.json()


def put(client, headers, digest: str, body: bytes, content_range: str, ws="lab"):
    return client.generic("PUT", f"{API}/{ws}/blobs/{digest}", body, content_type="application/octet-stream",
                          headers={**headers, "Content-Range": content_range})


def send(client, headers, data: bytes, ws="lab"):
    response = put(client, headers, sha(data), data, f"bytes 0-{len(data) - 1}/{len(data)}" if data else "bytes */0", ws)
    assert response.status_code == 200 and response.json()["complete"], response.content
    return response.json()


def create(client, headers, files, ws="lab", **fields):
    return client.post(f"{API}/{ws}/snapshots", {"files": files, **fields}, content_type="application/json",
                       headers=headers)


def state(client, headers, digest: str, ws="lab"):
    return client.get(f"{API}/{ws}/blobs/{digest}", headers=headers)


# Resubmitting sends only what changed --------------------------------------------------------------------------------


def test_resubmitting_after_changing_one_file_uploads_only_that_file(client, carol_token):
    files = {f"src/module_{index}.py": os.urandom(2000) for index in range(10)}
    manifest = [entry(path, data) for path, data in files.items()]
    first = missing(client, carol_token, manifest)
    assert sorted(first["missing"]) == sorted(item["sha256"] for item in manifest) and first["partial"] == {}
    for data in files.values():
        send(client, carol_token, data)
    made = create(client, carol_token, manifest, source_name="project")
    assert made.status_code == 201, made.content
    assert made.json()["uploaded_files"] == 10 and made.json()["uploaded_bytes"] == 20000

    files["src/module_3.py"] = b"changed = True\n"
    manifest = [entry(path, data) for path, data in files.items()]
    second = missing(client, carol_token, manifest)
    assert second["missing"] == [sha(b"changed = True\n")]
    send(client, carol_token, b"changed = True\n")
    again = create(client, carol_token, manifest, source_name="project").json()
    assert (again["uploaded_files"], again["uploaded_bytes"]) == (1, len(b"changed = True\n"))
    snapshot = Snapshot.objects.get(pk=again["id"])
    assert snapshot.file_count == 10 and snapshot.source_name == "project"
    assert snapshot.manifest == sorted(manifest, key=lambda item: item["path"])
    with snapshots.open_blob(snapshot, "src/module_3.py") as stored:
        assert stored.read() == b"changed = True\n"


def test_the_missing_route_answers_the_limits_for_an_empty_list(client, carol_token, settings):
    settings.STUDIO_SNAPSHOT_MAX_FILES, settings.STUDIO_SNAPSHOT_MAX_BYTES = 7, 1234
    answer = missing(client, carol_token, [])
    assert answer == {"missing": [], "partial": {}, "max_files": 7, "max_bytes": 1234,
                      "max_request_bytes": settings.STUDIO_REQUEST_MAX_BYTES, "max_request_files": 100}


# Resumable uploads ---------------------------------------------------------------------------------------------------


def test_a_half_sent_blob_resumes_from_the_offset_the_studio_holds(client, carol_token):
    data = os.urandom(100_000)
    digest = sha(data)
    first = put(client, carol_token, digest, data[:40_000], "bytes 0-39999/100000")
    assert first.status_code == 200
    assert first.json() == {"sha256": digest, "size": 100_000, "received": 40_000, "complete": False, "written": 40_000}
    assert state(client, carol_token, digest).json()["received"] == 40_000
    assert missing(client, carol_token, [entry("big.bin", data)])["partial"] == {digest: 40_000}
    head = client.head(f"{API}/lab/blobs/{digest}", headers=carol_token)
    assert (head["Upload-Offset"], head["Upload-Length"], head["Upload-Complete"]) == ("40000", "100000", "0")

    again = put(client, carol_token, digest, data[:10], "bytes 0-9/100000")
    assert again.status_code == 409 and "send the range that starts at byte 40,000" in again.json()["error"]
    rest = put(client, carol_token, digest, data[40_000:], "bytes 40000-99999/100000")
    assert rest.json() == {"sha256": digest, "size": 100_000, "received": 100_000, "complete": True, "written": 60_000}
    assert missing(client, carol_token, [entry("big.bin", data)])["missing"] == []
    made = create(client, carol_token, [entry("big.bin", data)]).json()
    assert made["uploaded_bytes"] == 100_000
    assert blobs.path(digest).read_bytes() == data


def test_a_body_cut_short_keeps_what_arrived(client, carol_token):
    data = os.urandom(5000)
    response = client.generic("PUT", f"{API}/lab/blobs/{sha(data)}", data[:3000], content_type="application/octet-stream",
                              headers={**carol_token, "Content-Range": "bytes 0-4999/5000"})
    assert response.status_code == 400 and "Content-Length is 3,000" in response.json()["error"]
    # A body that ends early without a declared length keeps its bytes (as a dropped connection does).
    ws = Workspace.objects.get(name="lab")
    with pytest.raises(snapshot_sync.SyncError, match="continue from byte 3,000"):
        snapshot_sync.receive(ws, sha(data), "bytes 0-4999/5000", io.BytesIO(data[:3000]), None)
    assert snapshot_sync.state(ws, sha(data))["received"] == 3000


def test_a_hash_mismatch_is_refused_and_nothing_is_kept(client, carol_token):
    data = b"the real bytes"
    wrong = sha(b"other bytes")
    response = put(client, carol_token, wrong, data, f"bytes 0-{len(data) - 1}/{len(data)}")
    assert response.status_code == 400
    assert f"have the sha256 {sha(data)}, not {wrong}" in response.json()["error"]
    assert state(client, carol_token, wrong).json() == {"sha256": wrong, "size": None, "received": 0,
                                                        "complete": False, "written": 0}
    assert not blobs.exists(wrong) and not blobs.exists(sha(data))


def test_a_resumed_upload_is_checked_whole(client, carol_token):
    data = os.urandom(1000)
    digest = sha(data)
    assert put(client, carol_token, digest, data[:500], "bytes 0-499/1000").status_code == 200
    response = put(client, carol_token, digest, os.urandom(500), "bytes 500-999/1000")
    assert response.status_code == 400 and "changed while it was sent" in response.json()["error"]
    assert state(client, carol_token, digest).json()["received"] == 0


def test_small_files_go_several_to_a_request(client, carol_token):
    files = [os.urandom(300) for _ in range(5)]
    parts = {sha(data): io.BytesIO(data) for data in files}
    response = client.post(f"{API}/lab/blobs", parts, headers=carol_token)
    assert response.status_code == 200, response.content
    assert sorted(response.json()["held"]) == sorted(parts) and response.json()["written"] == 1500
    assert missing(client, carol_token, [entry(f"{index}.bin", data) for index, data in enumerate(files)])["missing"] == []
    made = create(client, carol_token, [entry(f"{index}.bin", data) for index, data in enumerate(files)]).json()
    assert (made["uploaded_files"], made["uploaded_bytes"]) == (5, 1500)


def test_a_packed_file_with_other_bytes_is_refused_and_the_others_kept(client, carol_token):
    good, bad = b"good bytes", b"bad bytes"
    response = client.post(f"{API}/lab/blobs", {sha(good): io.BytesIO(good), sha(b"claimed"): io.BytesIO(bad)},
                           headers=carol_token)
    assert response.status_code == 400 and f"{sha(b'claimed')} (its bytes have the sha256 {sha(bad)})" in \
        response.json()["error"]
    assert state(client, carol_token, sha(good)).json()["complete"]
    assert not state(client, carol_token, sha(b"claimed")).json()["complete"]
    assert not list(snapshot_sync.uploads_dir(Workspace.objects.get(name="lab")).glob("*.incoming"))
    empty = client.post(f"{API}/lab/blobs", {}, headers=carol_token)
    assert empty.status_code == 400 and "multipart/form-data" in empty.json()["error"]


@pytest.mark.parametrize(("content_range", "message"), [
    ("", "Send Content-Range: bytes START-END/TOTAL"),
    ("bytes 0-9", "Send Content-Range"),
    ("bytes 5-2/10", "START <= END < TOTAL"),
    ("bytes 0-10/10", "START <= END < TOTAL"),
])
def test_a_wrong_content_range_is_a_clear_400(client, carol_token, content_range, message):
    response = put(client, carol_token, "a" * 64, b"x" * 10, content_range)
    assert response.status_code == 400 and message in response.json()["error"]


def test_a_blob_over_the_snapshot_limit_is_413(client, carol_token, settings):
    settings.STUDIO_SNAPSHOT_MAX_BYTES = 1000
    response = put(client, carol_token, "a" * 64, b"x" * 10, "bytes 0-9/1001")
    assert response.status_code == 413 and "STUDIO_SNAPSHOT_MAX_BYTES" in response.json()["error"]


def test_a_blob_name_must_be_a_sha256(client, carol_token):
    response = put(client, carol_token, "not-a-hash", b"x", "bytes 0-0/1")
    assert response.status_code == 400 and "64 lowercase hexadecimal digits" in response.json()["error"]
    assert state(client, carol_token, "A" * 64).status_code == 400


def test_an_empty_file_needs_no_bytes(client, carol_token):
    send(client, carol_token, b"")
    made = create(client, carol_token, [entry("__init__.py", b""), entry("a.py", b"a")])
    assert made.status_code == 400  # a.py was never sent
    send(client, carol_token, b"a")
    assert create(client, carol_token, [entry("__init__.py", b""), entry("a.py", b"a")]).status_code == 201
    wrong = put(client, carol_token, "b" * 64, b"", "bytes */0")
    assert wrong.status_code == 400 and "An empty file has the sha256" in wrong.json()["error"]


def test_stale_partial_uploads_are_swept(client, carol_token, workspace, monkeypatch):
    data = os.urandom(1000)
    put(client, carol_token, sha(data), data[:100], "bytes 0-99/1000")
    folder = snapshot_sync.uploads_dir(workspace)
    (partial,) = folder.glob("*.partial")
    old = time.time() - snapshot_sync.STALE_AFTER - 60
    os.utime(partial, (old, old))
    assert snapshot_sync.sweep() == 1 and not list(folder.glob("*.partial"))
    assert state(client, carol_token, sha(data)).json()["received"] == 0
    # The upload routes sweep on their own, at most every SWEEP_EVERY seconds.
    put(client, carol_token, sha(data), data[:100], "bytes 0-99/1000")
    os.utime(next(folder.glob("*.partial")), (old, old))
    os.utime(snapshot_sync.uploads_root() / ".swept", (old, old))
    missing(client, carol_token, [])
    assert not list(folder.glob("*.partial"))


def test_unfinished_uploads_of_a_workspace_are_bounded(client, carol_token, settings):
    settings.STUDIO_SNAPSHOT_MAX_BYTES = 1000
    for index in range(2):
        data = bytes([index]) * 1000
        assert put(client, carol_token, sha(data), data[:900], "bytes 0-899/1000").status_code == 200
    response = put(client, carol_token, "c" * 64, b"x", "bytes 0-0/300")
    assert response.status_code == 413 and "Create the snapshot" in response.json()["error"]


# Nothing leaks across workspaces -------------------------------------------------------------------------------------


def test_another_workspace_cannot_learn_that_content_exists(client, carol_token, charlie_token, cast, workspace):
    secret = b"lab's private weights " + os.urandom(16)
    send(client, carol_token, secret)
    assert create(client, carol_token, [entry("secret.bin", secret)]).status_code == 201
    assert blobs.exists(sha(secret))

    # charlie (workspace "elsewhere") asks about the same content: it is missing for him, in every answer.
    assert missing(client, charlie_token, [entry("guess.bin", secret)], ws="elsewhere")["missing"] == [sha(secret)]
    assert state(client, charlie_token, sha(secret), ws="elsewhere").json() == {
        "sha256": sha(secret), "size": None, "received": 0, "complete": False, "written": 0}
    refused = create(client, charlie_token, [entry("guess.bin", secret)], ws="elsewhere")
    assert refused.status_code == 400 and refused.json()["errors"]["missing"] == [sha(secret)]
    # ... a file path that spells the hash does not count either
    send(client, charlie_token, b"x", ws="elsewhere")
    assert create(client, charlie_token, [entry(sha(secret), b"x")], ws="elsewhere").status_code == 201
    assert missing(client, charlie_token, [entry("guess.bin", secret)], ws="elsewhere")["missing"] == [sha(secret)]
    # and he cannot read lab's uploads or snapshots at all
    assert client.post(f"{API}/lab/snapshots/missing", {"files": []}, content_type="application/json",
                       headers=charlie_token).status_code == 404

    # Sending the bytes works, and the store keeps them once.
    send(client, charlie_token, secret, ws="elsewhere")
    made = create(client, charlie_token, [entry("guess.bin", secret)], ws="elsewhere")
    assert made.status_code == 201 and made.json()["uploaded_bytes"] == len(secret)
    assert not list(snapshot_sync.uploads_dir(Workspace.objects.get(name="elsewhere")).glob("*.done"))


def test_content_of_the_workspaces_own_runs_counts_as_held(client, carol_token, cast, workspace):
    from tests.conftest import make_run

    make_run(workspace, cast["carol"], "print('held')\n")
    assert missing(client, carol_token, [entry("train.py", b"print('held')\n")])["missing"] == []
    made = create(client, carol_token, [entry("train.py", b"print('held')\n")])
    assert made.status_code == 201 and made.json()["uploaded_files"] == 0


# The rules of uploads ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "message"), [
    ("../outside.py", "may not leave the folder"),
    ("/etc/passwd", "relative paths"),
    ("src\\win.py", "backslashes"),
    ("C:/x.py", "drive"),
    ("evil\u202etxt.py", "U+202E"),
    ("src/../../x.py", "may not leave the folder"),
    ("./a.py", "without '.', '..' or empty parts"),
    ("a//b.py", "without '.', '..' or empty parts"),
    ("x" * 256 + ".py", "at most 255 bytes"),
])
def test_unsafe_paths_are_refused(client, carol_token, path, message):
    send(client, carol_token, b"data")
    response = create(client, carol_token, [entry(path, b"data")])
    assert response.status_code == 400 and message in response.json()["error"], response.json()
    assert not Snapshot.objects.exists()


def test_duplicates_and_file_folder_clashes_are_refused(client, carol_token):
    send(client, carol_token, b"a")
    twice = create(client, carol_token, [entry("a.py", b"a"), entry("a.py", b"a")])
    assert twice.status_code == 400 and "more than once" in twice.json()["error"]
    clash = create(client, carol_token, [entry("a", b"a"), entry("a/b.py", b"a")])
    assert clash.status_code == 400 and "both a file and a folder" in clash.json()["error"]


def test_the_limits_of_uploads_apply(client, carol_token, settings):
    send(client, carol_token, b"a")
    send(client, carol_token, b"bb")
    settings.STUDIO_SNAPSHOT_MAX_FILES = 1
    many = create(client, carol_token, [entry("a.py", b"a"), entry("b.py", b"bb")])
    assert many.status_code == 400 and "STUDIO_SNAPSHOT_MAX_FILES" in many.json()["error"]
    assert client.post(
        f"{API}/lab/snapshots/missing", {"files": [entry("a.py", b"a"), entry("b.py", b"bb")]},
        content_type="application/json", headers=carol_token).status_code == 400
    settings.STUDIO_SNAPSHOT_MAX_FILES, settings.STUDIO_SNAPSHOT_MAX_BYTES = 10, 2
    big = create(client, carol_token, [entry("a.py", b"a"), entry("b.py", b"bb")])
    assert big.status_code == 400 and "STUDIO_SNAPSHOT_MAX_BYTES" in big.json()["error"]
    empty = create(client, carol_token, [])
    assert empty.status_code == 400 and "lists no files" in empty.json()["error"]


def test_a_size_that_does_not_match_the_content_is_refused(client, carol_token):
    send(client, carol_token, b"four")
    response = create(client, carol_token, [{"path": "a.py", "sha256": sha(b"four"), "size": 5}])
    assert response.status_code == 400 and "listed with 5 bytes" in response.json()["error"]


def test_the_ignore_file_named_must_be_the_one_that_applies(client, carol_token):
    for data in (b"a", b"*.log\n", b"data/\n"):
        send(client, carol_token, data)
    both = [entry("a.py", b"a"), entry(".gitignore", b"*.log\n"), entry(".amlignore", b"data/\n")]
    wrong = create(client, carol_token, both, ignore_file=".gitignore")
    assert wrong.status_code == 400 and ".amlignore wins over .gitignore" in wrong.json()["error"]
    absent = create(client, carol_token, [entry("a.py", b"a")], ignore_file=".amlignore")
    assert absent.status_code == 400 and "lists no such file" in absent.json()["error"]
    other = create(client, carol_token, [entry("a.py", b"a")], ignore_file="ignore.txt")
    assert other.status_code == 400
    made = create(client, carol_token, both, ignore_file=".amlignore", ignored_count=3, source_name="proj")
    assert made.status_code == 201
    snapshot = Snapshot.objects.get(pk=made.json()["id"])
    assert (snapshot.ignore_file, snapshot.ignored_count) == (".amlignore", 3)


@pytest.mark.parametrize("name", ["evil\u202eman", "two\nlines", "x" * 256])
def test_a_source_name_with_controls_is_refused(client, carol_token, name):
    send(client, carol_token, b"a")
    assert create(client, carol_token, [entry("a.py", b"a")], source_name=name).status_code == 400


def test_readers_cannot_send(client, cast, workspace):
    headers = {"Authorization": f"Token {ApiToken.issue(cast['bob'], 'r')[1]}"}
    assert client.post(f"{API}/lab/snapshots/missing", {"files": []}, content_type="application/json",
                       headers=headers).status_code == 403
    assert state(client, headers, "a" * 64).status_code == 403
    assert put(client, headers, sha(b"a"), b"a", "bytes 0-0/1").status_code == 403


# Submitting a run with the snapshot -----------------------------------------------------------------------------------


def test_a_run_is_submitted_with_a_snapshot_id(client, carol_token, cast, workspace):
    files = {"train.py": b"print('from blobs')\n", "lib/util.py": b"X = 1\n"}
    for data in files.values():
        send(client, carol_token, data)
    snapshot_id = create(client, carol_token, [entry(p, d) for p, d in files.items()]).json()["id"]
    response = client.post(f"{API}/lab/runs", {"experiment": "sync", "snapshot_id": snapshot_id,
                                               "entry_script": "train.py"}, headers=carol_token)
    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["id"])
    assert run.snapshot_id == snapshot_id and run.entry_script == "train.py"
    # the same snapshot serves another run
    second = client.post(f"{API}/lab/runs", {"experiment": "sync", "snapshot_id": snapshot_id,
                                             "entry_script": "train.py"}, headers=carol_token)
    assert second.status_code == 201 and Snapshot.objects.count() == 1


def test_a_snapshot_id_is_checked_like_an_upload(client, carol_token, charlie_token, cast, workspace):
    send(client, carol_token, b"x = 1\n")
    snapshot_id = create(client, carol_token, [entry("train.py", b"x = 1\n")]).json()["id"]
    wrong_entry = client.post(f"{API}/lab/runs", {"experiment": "sync", "snapshot_id": snapshot_id,
                                                  "entry_script": "other.py"}, headers=carol_token)
    assert wrong_entry.status_code == 400 and "other.py is not in the uploaded source" in wrong_entry.json()["error"]
    single = client.post(f"{API}/lab/runs", {"experiment": "sync", "snapshot_id": snapshot_id}, headers=carol_token)
    assert single.status_code == 201 and single.json()["entry_script"] == "train.py"
    # another workspace's snapshot is not there for charlie
    other = Workspace.objects.get(name="elsewhere")
    theirs = client.post(f"{API}/elsewhere/runs", {"experiment": "x", "snapshot_id": snapshot_id},
                         headers=charlie_token)
    assert theirs.status_code == 400 and f"no snapshot {snapshot_id} in this workspace" in theirs.json()["error"]
    assert not Run.objects.filter(workspace=other).exists()
    both = client.post(f"{API}/lab/runs", {"experiment": "sync", "snapshot_id": snapshot_id,
                                           "source": py_upload("print(1)\n")}, headers=carol_token)
    assert both.status_code == 400 and "not both" in both.json()["error"]
    neither = client.post(f"{API}/lab/runs", {"experiment": "sync"}, headers=carol_token)
    assert neither.status_code == 400 and "snapshot_id" in neither.json()["error"]
    bad = client.post(f"{API}/lab/runs", {"experiment": "sync", "snapshot_id": "x"}, headers=carol_token)
    assert bad.status_code == 400 and "snapshot_id" in bad.json()["errors"]


def test_the_upload_path_keeps_working(client, carol_token):
    response = client.post(f"{API}/lab/runs", {"experiment": "sync", "source": py_upload("print(2)\n")},
                           headers=carol_token)
    assert response.status_code == 201
