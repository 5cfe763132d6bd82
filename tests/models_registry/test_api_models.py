"""The registry's REST API: register from a run, from uploaded files or an archive, from an archive streamed as the
body; list, filter, resolve, alias, tag, archive, download, delete."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from endpoints.models import Deployment, Endpoint
from models_registry.models import ModelVersion, RegisteredModel
from studio.models import ApiToken
from tests.models_registry.conftest import (
    MLMODEL,
    completed_run_with_outputs,
    sklearn_pickle,
    tar_bytes,
    zip_bytes,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
API = "/api/v1/workspaces/lab"


def auth(user) -> dict:
    return {"Authorization": f"Token {ApiToken.issue(user, 'tests')[1]}"}


def post_json(client, user, url, payload):
    return client.post(url, json.dumps(payload), content_type="application/json", headers=auth(user))


def upload(client, user, name, files, **fields):
    data = {"files": [io.BytesIO(content) for content in files.values()], **fields}
    for handle, filename in zip(data["files"], files, strict=True):
        handle.name = filename
    return client.post(f"{API}/models/{name}/versions/upload", data, headers=auth(user))


@pytest.fixture
def run(cast, workspace):
    return completed_run_with_outputs(workspace, cast["carol"], {
        "outputs/model/MLmodel": MLMODEL.encode(), "outputs/model/model.pkl": sklearn_pickle(),
    })


def test_registering_a_runs_output_folder(client, cast, run):
    response = post_json(client, cast["carol"], f"{API}/models/digits/versions",
                         {"run_id": run.pk, "paths": ["outputs/model"], "tags": {"team": "vision"},
                          "description": "first"})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["model"], body["version"], body["framework"], body["source"]) == ("digits", 1, "scikit-learn", "run")
    assert [f["path"] for f in body["files"]] == ["model/MLmodel", "model/model.pkl"]
    assert body["lineage"]["run"] == run.pk and body["lineage"]["experiment"] == "digits"
    assert body["tags"] == {"team": "vision"} and body["description"] == "first"


def test_a_run_of_another_workspace_is_a_404(client, cast, workspace):
    from studio.models import Workspace

    other = completed_run_with_outputs(Workspace.objects.get(name="elsewhere"), cast["alice"],
                                       {"outputs/model.pkl": b"w"})
    response = post_json(client, cast["alice"], f"{API}/models/m/versions",
                         {"run_id": other.pk, "paths": ["outputs/model.pkl"]})
    assert response.status_code == 404
    assert not RegisteredModel.objects.exists()


def test_uploading_several_files(client, cast, workspace):
    response = upload(client, cast["carol"], "bert", {"weights.bin": b"w" * 1000, "vocab.txt": b"a\nb\n"},
                      tags='{"lang": "en"}', framework="transformers")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert [(f["path"], f["size"]) for f in body["files"]] == [("vocab.txt", 4), ("weights.bin", 1000)]
    assert body["source"] == "uploaded" and body["lineage"] == {} and body["framework"] == "transformers"
    assert body["tags"] == {"lang": "en"}


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_uploading_a_folder_as_an_archive_strips_its_top_folder(client, cast, workspace, kind):
    files = {"model/MLmodel": MLMODEL.encode(), "model/model.pkl": sklearn_pickle(), "model/sub/extra.json": b"{}"}
    content = zip_bytes(files) if kind == "zip" else tar_bytes(files)
    response = upload(client, cast["carol"], "digits", {f"model.{kind}": content})
    assert response.status_code == 201, response.json()
    assert [f["path"] for f in response.json()["files"]] == ["MLmodel", "model.pkl", "sub/extra.json"]
    assert response.json()["framework"] == "scikit-learn"


def test_an_archive_streamed_as_the_body_is_registered(client, cast, workspace):
    content = tar_bytes({"model/weights.bin": b"x" * 50_000, "model/config.json": b"{}"})
    response = client.post(f"{API}/models/big/versions/archive?tags=%7B%22size%22%3A%20%22xl%22%7D", content,
                           content_type="application/gzip", headers=auth(cast["carol"]))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert [f["path"] for f in body["files"]] == ["config.json", "weights.bin"] and body["tags"] == {"size": "xl"}


def test_a_body_that_is_not_an_archive_type_is_a_415(client, cast, workspace):
    response = client.post(f"{API}/models/big/versions/archive", b"{}", content_type="application/json",
                           headers=auth(cast["carol"]))
    assert response.status_code == 415 and "application/x-tar" in response.json()["error"]


def _evil_tar(kind: str) -> bytes:
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("model/link" if kind != "escape" else "../../etc/evil")
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "model/a"
        elif kind == "fifo":
            info.type = tarfile.FIFOTYPE
        archive.addfile(info, io.BytesIO(b"") if kind in ("symlink", "hardlink", "fifo") else io.BytesIO(b"x"))
        if kind == "escape":
            pass
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "content", "message"), [
    ("evil.tar", _evil_tar("symlink"), "a symbolic link is not allowed in a model"),
    ("evil.tar", _evil_tar("hardlink"), "a hard link is not allowed in a model"),
    ("evil.tar", _evil_tar("fifo"), "special files are not allowed in a model"),
    ("evil.tar", _evil_tar("escape"), "Refused"),
    ("evil.zip", zip_bytes({"../outside.txt": b"x"}), "Refused"),
    ("evil.zip", zip_bytes({"model/evil\u202etxt.py": b"x"}), "U+202E"),
    ("evil.zip", zip_bytes({"a.txt": b"1", "./a.txt": b"2"}), "more than once"),
    ("broken.zip", b"PK\x03\x04 not really", "not a valid zip archive"),
])
def test_hostile_archives_are_refused_and_nothing_is_stored(client, cast, workspace, settings, name, content, message):
    response = upload(client, cast["carol"], "m", {name: content})
    assert response.status_code == 400, response.json()
    assert message in response.json()["error"]
    assert not RegisteredModel.objects.exists() and not ModelVersion.objects.exists()
    assert list((settings.DATA_DIR / "tmp").glob("model-*")) == []


def test_an_upload_over_the_model_limit_is_refused(client, cast, workspace, settings):
    settings.STUDIO_MODEL_MAX_BYTES = 10_000
    response = upload(client, cast["carol"], "m", {"model.tar.gz": tar_bytes({"w.bin": b"\x00" * 50_000})})
    assert response.status_code == 400
    assert "the limit is 9,766 bytes (STUDIO_MODEL_MAX_BYTES)" in response.json()["error"] or \
           "STUDIO_MODEL_MAX_BYTES" in response.json()["error"]
    assert not ModelVersion.objects.exists()


def test_listing_filters_and_pages(client, cast, run, workspace):
    for name, tags in (("digits", {"team": "vision"}), ("speech", {"team": "audio"}), ("digits", {"team": "vision"})):
        post_json(client, cast["carol"], f"{API}/models/{name}/versions",
                  {"run_id": run.pk, "paths": ["outputs/model"], "tags": tags})
    client.put(f"{API}/models/digits/aliases/production", json.dumps({"version": 1}),
               content_type="application/json", headers=auth(cast["carol"]))
    listing = client.get(f"{API}/models", headers=auth(cast["bob"])).json()
    assert [m["name"] for m in listing["models"]] == ["digits", "speech"]  # newest registration first
    digits = listing["models"][0]
    assert digits["latest_version"] == 2 and digits["aliases"] == {"production": 1}
    assert digits["framework"] == "scikit-learn" and digits["tags"] == {"team": "vision"}
    for query, names in (("tag=team%3Daudio", ["speech"]), ("tag=team", ["digits", "speech"]),
                         ("alias=production", ["digits"]), ("q=spe", ["speech"]),
                         ("framework=scikit-learn", ["digits", "speech"]), ("framework=onnx", [])):
        got = client.get(f"{API}/models?{query}", headers=auth(cast["bob"])).json()["models"]
        assert [m["name"] for m in got] == names, query
    bad = client.get(f"{API}/models?after=nonsense", headers=auth(cast["bob"]))
    assert bad.status_code == 400 and "cursor" in bad.json()["error"]


def test_resolving_aliases_and_versions(client, cast, run):
    for _ in range(2):
        post_json(client, cast["carol"], f"{API}/models/digits/versions", {"run_id": run.pk, "paths": ["outputs/model"]})
    moved = client.put(f"{API}/models/digits/aliases/production", json.dumps({"version": 1}),
                       content_type="application/json", headers=auth(cast["carol"]))
    assert moved.status_code == 200 and moved.json()["updated_by"] == "carol"
    for reference, version in (("digits@production", 1), ("digits:2", 2), ("digits", 2), ("digits:latest", 2)):
        response = client.get(f"{API}/model-versions/{reference}", headers=auth(cast["bob"]))
        assert response.status_code == 200 and response.json()["version"] == version, reference
    missing = client.get(f"{API}/model-versions/digits@canary", headers=auth(cast["bob"]))
    assert missing.status_code == 404 and "no alias 'canary'" in missing.json()["error"]
    assert client.delete(f"{API}/models/digits/aliases/production", headers=auth(cast["carol"])).status_code == 204
    assert client.get(f"{API}/model-versions/digits@production", headers=auth(cast["bob"])).status_code == 404


def test_tags_archive_download_and_delete(client, cast, run):
    post_json(client, cast["carol"], f"{API}/models/digits/versions", {"run_id": run.pk, "paths": ["outputs/model"]})
    tagged = client.put(f"{API}/models/digits/versions/1/tags", json.dumps({"tags": {"stage": "qa"}}),
                        content_type="application/json", headers=auth(cast["carol"]))
    assert tagged.status_code == 200 and tagged.json()["tags"] == {"stage": "qa"}
    one = client.get(f"{API}/models/digits/versions/1/files/model/MLmodel", headers=auth(cast["bob"]))
    assert one.status_code == 200 and b"".join(one.streaming_content).decode() == MLMODEL
    whole = client.get(f"{API}/models/digits/versions/1/files.zip", headers=auth(cast["bob"]))
    with zipfile.ZipFile(io.BytesIO(b"".join(whole.streaming_content))) as archive:
        assert archive.namelist() == ["model/MLmodel", "model/model.pkl"]
    archived = post_json(client, cast["carol"], f"{API}/models/digits/archive", {"archived": True})
    assert archived.status_code == 200 and archived.json()["archived"] is True
    assert client.get(f"{API}/models", headers=auth(cast["bob"])).json()["models"] == []
    assert [m["name"] for m in client.get(f"{API}/models?archived=true", headers=auth(cast["bob"])).json()["models"]] \
        == ["digits"]
    refused = client.delete(f"{API}/models/digits/versions/1", headers=auth(cast["carol"]))
    assert refused.status_code == 403  # contributors do not delete versions
    endpoint = Endpoint.objects.create(workspace=run.workspace, name="digits-api")
    deployment = Deployment.objects.create(endpoint=endpoint, name="blue", model_version=ModelVersion.objects.get(),
                                           compute_target=run.workspace.compute_targets.get(name="local"))
    blocked = client.delete(f"{API}/models/digits/versions/1", headers=auth(cast["alice"]))
    assert blocked.status_code == 409
    assert blocked.json()["error"] == ("digits:1 cannot be deleted: it is in use by deployment blue of endpoint "
                                       "digits-api. Delete or move that deployment first.")
    deployment.delete()
    deleted = client.delete(f"{API}/models/digits/versions/1", headers=auth(cast["alice"]))
    assert deleted.status_code == 200 and deleted.json()["deleted"] == "digits:1"
    assert not ModelVersion.objects.exists()


def test_the_openapi_document_lists_the_registry(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    for path in ("/api/v1/workspaces/{workspace}/models", "/api/v1/workspaces/{workspace}/models/{name}/versions",
                 "/api/v1/workspaces/{workspace}/models/{name}/versions/archive",
                 "/api/v1/workspaces/{workspace}/model-versions/{reference}", "/api/v1/runs/{run_id}/models"):
        assert path in paths, path
