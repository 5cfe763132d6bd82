"""MLflow's model registry routes over the studio's registry, and the artifact routes a client uploads models and
loads registered versions through."""

from __future__ import annotations

import pytest

from models_registry.models import ModelVersion
from runs import storage
from tests.mlflow_api.conftest import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
ARTIFACTS = "/mlflow/lab/api/2.0/mlflow-artifacts/artifacts"


def put(caller, path: str, content: bytes):
    return caller.client.generic("PUT", f"{ARTIFACTS}/{path}", content, content_type="application/octet-stream",
                                 headers=caller.headers())


def download(caller, path: str) -> bytes:
    response = caller.client.get(f"{ARTIFACTS}/{path}", headers=caller.headers())
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content) if response.streaming else response.content


def listing(caller, path: str) -> list:
    response = caller.client.get(ARTIFACTS, {"path": path}, headers=caller.headers())
    assert response.status_code == 200, response.content
    return response.json()["files"]


def logged_model(caller, run_id: str | None, experiment_id: str, name: str = "model") -> dict:
    body = {"experiment_id": experiment_id, "name": name, **({"source_run_id": run_id} if run_id else {})}
    response = caller.post("logged-models", body)
    assert response.status_code == 200, response.content
    return response.json()["model"]["info"]


def artifact_path(uri: str) -> str:
    return uri.removeprefix("mlflow-artifacts:/")


def test_a_model_logged_in_a_run_lives_in_its_outputs_and_registers_without_a_copy(carol_mlflow):
    run_id = carol_mlflow.new_run()
    experiment_id = carol_mlflow.get("runs/get", run_id=run_id).json()["run"]["info"]["experiment_id"]
    info = logged_model(carol_mlflow, run_id, experiment_id)
    assert info["status"] == "LOGGED_MODEL_PENDING" and info["source_run_id"] == run_id
    root = artifact_path(info["artifact_uri"])
    assert root == f"{experiment_id}/{run_id}/artifacts/model"
    assert put(carol_mlflow, f"{root}/MLmodel", b"flavors:\n  python_function: {}\n").status_code == 200
    assert put(carol_mlflow, f"{root}/data/weights.bin", b"w" * 1000).status_code == 200
    finalized = carol_mlflow.post(f"logged-models/{info['model_id']}", {"status": "LOGGED_MODEL_READY"}, "PATCH")
    assert finalized.json()["model"]["info"]["status"] == "LOGGED_MODEL_READY"
    assert listing(carol_mlflow, root) == [{"path": "MLmodel", "is_dir": False, "file_size": 31},
                                           {"path": "data", "is_dir": True}]
    # a second model of the same name in the run gets a folder of its own
    second = logged_model(carol_mlflow, run_id, experiment_id)
    assert artifact_path(second["artifact_uri"]) == f"{root}-{second['model_id'][2:10]}"

    assert carol_mlflow.post("registered-models/create", {"name": "digits"}).status_code == 200
    created = carol_mlflow.post("model-versions/create", {"name": "digits", "source": f"models:/{info['model_id']}",
                                                          "model_id": info["model_id"], "run_id": run_id})
    assert created.status_code == 200, created.content
    mv = created.json()["model_version"]
    assert (mv["version"], mv["status"], mv["run_id"], mv["model_id"]) == ("1", "READY", run_id, info["model_id"])
    version = ModelVersion.objects.get()
    assert sorted(version.files.values_list("path", "size")) == [("MLmodel", 31), ("data/weights.bin", 1000)]
    run = version.run
    stored = storage.run_dir(run.pk) / "outputs/model/data/weights.bin"
    sha = version.files.get(path="data/weights.bin").sha256
    from studio import blobs

    assert blobs.path(sha).stat().st_ino == stored.stat().st_ino  # the blob is the output: no byte copied

    uri = carol_mlflow.get("model-versions/get-download-uri", name="digits", version="1").json()["artifact_uri"]
    assert uri == "mlflow-artifacts:/registry/digits/1"
    assert listing(carol_mlflow, "registry/digits/1") == [{"path": "MLmodel", "is_dir": False, "file_size": 31},
                                                          {"path": "data", "is_dir": True}]
    assert download(carol_mlflow, "registry/digits/1/data/weights.bin") == b"w" * 1000
    refused = put(carol_mlflow, "registry/digits/1/MLmodel", b"changed")
    assert_error(refused, 403, "PERMISSION_DENIED", "never change")


def test_a_model_logged_outside_a_run_is_registered_from_its_own_folder(carol_mlflow):
    experiment_id = carol_mlflow.post("experiments/create", {"name": "standalone"}).json()["experiment_id"]
    info = logged_model(carol_mlflow, None, experiment_id, name="solo")
    root = artifact_path(info["artifact_uri"])
    assert root == f"{experiment_id}/models/{info['model_id']}/artifacts"
    assert put(carol_mlflow, f"{root}/model.pkl", b"pickle").status_code == 200
    carol_mlflow.post("registered-models/create", {"name": "solo"})
    created = carol_mlflow.post("model-versions/create", {"name": "solo", "source": f"models:/{info['model_id']}"})
    assert created.status_code == 200, created.content
    assert download(carol_mlflow, "registry/solo/1/model.pkl") == b"pickle"
    assert ModelVersion.objects.get(model__name="solo").source == "uploaded"


def test_a_run_folder_registers_by_runs_uri_and_by_artifact_uri(carol_mlflow):
    run_id = carol_mlflow.new_run()
    experiment_id = carol_mlflow.get("runs/get", run_id=run_id).json()["run"]["info"]["experiment_id"]
    put(carol_mlflow, f"{experiment_id}/{run_id}/artifacts/model/model.pkl", b"weights")
    carol_mlflow.post("registered-models/create", {"name": "clf"})
    for source in (f"runs:/{run_id}/model", f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/model"):
        response = carol_mlflow.post("model-versions/create", {"name": "clf", "source": source, "run_id": run_id})
        assert response.status_code == 200, response.content
        assert response.json()["model_version"]["source"] == source
    assert [list(v.files.values_list("path", flat=True)) for v in ModelVersion.objects.order_by("version")] == [
        ["model.pkl"], ["model.pkl"]]
    assert_error(carol_mlflow.post("model-versions/create", {"name": "clf", "source": "s3://bucket/model"}), 400,
                 "INVALID_PARAMETER_VALUE", "runs:/<run id>/<path>")
    assert_error(carol_mlflow.post("model-versions/create", {"name": "nope", "source": f"runs:/{run_id}/model"}), 404,
                 "RESOURCE_DOES_NOT_EXIST", "Registered Model with name=nope not found")
    assert_error(carol_mlflow.post("model-versions/create", {"name": "clf", "source": f"runs:/{run_id}/missing"}), 404,
                 "RESOURCE_DOES_NOT_EXIST")


def test_aliases_tags_descriptions_and_searches(carol_mlflow, cast):
    run_id = carol_mlflow.new_run()
    experiment_id = carol_mlflow.get("runs/get", run_id=run_id).json()["run"]["info"]["experiment_id"]
    put(carol_mlflow, f"{experiment_id}/{run_id}/artifacts/model/model.pkl", b"weights")
    for name in ("digits-a", "digits-b", "other"):
        carol_mlflow.post("registered-models/create", {"name": name, "description": f"about {name}"})
        carol_mlflow.post("model-versions/create", {"name": name, "source": f"runs:/{run_id}/model"})
    carol_mlflow.post("model-versions/create", {"name": "digits-a", "source": f"runs:/{run_id}/model",
                                                "tags": [{"key": "stage", "value": "candidate"}]})
    assert carol_mlflow.post("registered-models/alias", {"name": "digits-a", "alias": "production",
                                                         "version": "1"}).status_code == 200
    by_alias = carol_mlflow.get("registered-models/alias", name="digits-a", alias="production").json()
    assert by_alias["model_version"]["version"] == "1" and by_alias["model_version"]["aliases"] == ["production"]
    model = carol_mlflow.get("registered-models/get", name="digits-a").json()["registered_model"]
    assert model["aliases"] == [{"alias": "production", "version": "1"}] and model["description"] == "about digits-a"
    assert [v["version"] for v in model["latest_versions"]] == ["2"]
    latest = carol_mlflow.post("registered-models/get-latest-versions", {"name": "digits-a",
                                                                        "stages": ["Production", "None"]}).json()
    assert [v["version"] for v in latest["model_versions"]] == ["1", "2"]
    assert_error(carol_mlflow.post("registered-models/alias", {"name": "digits-a", "alias": "Prod!", "version": "1"}),
                 400, "INVALID_PARAMETER_VALUE", "cannot be an alias")
    assert carol_mlflow.post("registered-models/alias", {"name": "digits-a", "alias": "production"},
                             "DELETE").status_code == 200
    assert_error(carol_mlflow.get("registered-models/alias", name="digits-a", alias="production"), 404,
                 "RESOURCE_DOES_NOT_EXIST")

    assert carol_mlflow.post("model-versions/set-tag", {"name": "digits-a", "version": "1", "key": "reviewed",
                                                        "value": "yes"}).status_code == 200
    assert carol_mlflow.post("model-versions/delete-tag", {"name": "digits-a", "version": "2", "key": "stage"},
                             "DELETE").status_code == 200
    assert carol_mlflow.post("model-versions/update", {"name": "digits-a", "version": "1", "description": "first"},
                             "PATCH").status_code == 200
    got = carol_mlflow.get("model-versions/get", name="digits-a", version="1").json()["model_version"]
    assert got["tags"] == [{"key": "reviewed", "value": "yes"}] and got["description"] == "first"
    assert_error(carol_mlflow.get("model-versions/get", name="digits-a", version="9"), 404, "RESOURCE_DOES_NOT_EXIST")

    names = [m["name"] for m in carol_mlflow.get("registered-models/search", filter="name LIKE 'digits-%'",
                                                  order_by="name DESC").json()["registered_models"]]
    assert names == ["digits-b", "digits-a"]
    versions = carol_mlflow.get("model-versions/search", filter="name = 'digits-a'").json()["model_versions"]
    assert [v["version"] for v in versions] == ["2", "1"]
    by_run = carol_mlflow.get("model-versions/search", filter=f"run_id = '{run_id}'").json()["model_versions"]
    assert len(by_run) == 4
