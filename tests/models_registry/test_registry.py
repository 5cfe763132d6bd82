"""The registry's rules: versions, lineage, storage shared by content, aliases, resolution, deletion."""

from __future__ import annotations

import os
import threading

import pytest
from django.db import connection

from endpoints.models import Deployment, Endpoint
from models_registry import registry, uploads
from models_registry.models import AliasChange, ModelFile, ModelVersion, RegisteredModel
from runs import metrics, storage
from studio import blobs
from tests.conftest import make_run
from tests.models_registry.conftest import (
    MLMODEL,
    completed_run_with_outputs,
    onnx_model,
    sklearn_pickle,
    torch_state_dict,
)
from tests.services import disk_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


def test_registering_a_runs_output_file_shares_its_bytes_and_keeps_its_lineage(cast, workspace, settings):
    run = completed_run_with_outputs(workspace, cast["carol"], {"outputs/model.pkl": sklearn_pickle()})
    metrics.append_points(run, "accuracy", [(0, 0.9, 1.0), (1, 0.95, 2.0)])
    metrics.append_points(run, "sys/cpu_percent", [(0, 50.0, 1.0)])
    before = disk_bytes(settings.DATA_DIR)
    version = registry.register_from_run(run, cast["carol"], "digits-classifier", ["outputs/model.pkl"],
                                         tags={"team": "vision"})
    assert disk_bytes(settings.DATA_DIR) - before < 64 * 1024  # database rows only: no byte of the file copied
    assert (version.model.name, version.version, version.source) == ("digits-classifier", 1, "run")
    (item,) = version.files.all()
    assert item.path == "model.pkl"
    output = storage.run_dir(run.pk) / "outputs/model.pkl"
    assert os.path.samefile(blobs.path(item.sha256), output)  # the blob is the output itself
    assert version.framework == "scikit-learn" and version.framework_version == "1.5.2"
    assert version.details["estimator"] == "LogisticRegression"
    assert version.lineage == {
        "run": run.pk, "run_name": f"Run {run.pk}", "experiment": "digits", "status": "Completed",
        "snapshot": run.snapshot_id, "environment": "", "compute_target": "local",
        "metrics": {"accuracy": "0.95"},
    }
    assert version.tags == {"team": "vision"}


def test_registering_a_folder_keeps_its_tree_and_reads_the_mlflow_signature(cast, workspace):
    run = completed_run_with_outputs(workspace, cast["carol"], {
        "outputs/model/MLmodel": MLMODEL.encode(), "outputs/model/model.pkl": sklearn_pickle(),
        "outputs/model/conda.yaml": b"name: x\n", "outputs/other.txt": b"not part of it",
    })
    version = registry.register_from_run(run, cast["carol"], "digits", ["outputs/model/"])
    assert list(version.files.values_list("path", flat=True)) == ["model/MLmodel", "model/conda.yaml",
                                                                  "model/model.pkl"]
    assert version.framework == "scikit-learn" and version.framework_version == "1.5.2"
    assert version.details["flavors"] == ["python_function", "sklearn"]
    assert version.details["signature"] == {
        "inputs": [{"name": "pixel_0", "type": "double"}, {"name": "pixel_1", "type": "double"}],
        "outputs": [{"name": "", "type": "tensor int64 [-1]"}],
    }


@pytest.mark.parametrize(("files", "framework", "framework_version", "detail"), [
    ({"model.onnx": onnx_model(17)}, "onnx", "opset 17", ("producer", "skl2onnx")),
    ({"weights.pt": torch_state_dict()}, "pytorch", "", ("kind", "state dict")),
    ({"notes.bin": b"\x00\x01 whatever"}, "custom", "", None),
])
def test_the_framework_is_detected_from_the_files_without_running_them(cast, workspace, files, framework,
                                                                        framework_version, detail):
    run = completed_run_with_outputs(workspace, cast["carol"], {f"outputs/{k}": v for k, v in files.items()})
    version = registry.register_from_run(run, cast["carol"], "m", ["outputs"])
    assert (version.framework, version.framework_version) == (framework, framework_version)
    if detail:
        assert version.details[detail[0]] == detail[1]


def test_a_framework_given_by_the_user_wins(cast, workspace):
    run = completed_run_with_outputs(workspace, cast["carol"], {"outputs/model.pkl": sklearn_pickle()})
    version = registry.register_from_run(run, cast["carol"], "m", ["outputs/model.pkl"], framework="my-trees",
                                         framework_version="2")
    assert (version.framework, version.framework_version) == ("my-trees", "2")


def test_each_registration_adds_the_next_version_and_the_same_file_is_stored_once(cast, workspace, settings):
    run = completed_run_with_outputs(workspace, cast["carol"], {"outputs/model.pkl": b"w" * 100_000})
    for _ in range(3):
        registry.register_from_run(run, cast["carol"], "m", ["outputs/model.pkl"])
    model = RegisteredModel.objects.get(name="m")
    assert list(model.versions.values_list("version", flat=True)) == [3, 2, 1]
    assert len(set(ModelFile.objects.values_list("sha256", flat=True))) == 1


@pytest.mark.parametrize(("paths", "message"), [
    (["outputs/missing.pkl"], "has no stored file or folder 'outputs/missing.pkl'"),
    (["logs/std_log.txt"], "is not under outputs/"),
    (["outputs/../secret"], "Refused"),
    ([], "Pick at least one file or folder under outputs/."),
])
def test_what_is_not_a_stored_output_is_refused(cast, workspace, paths, message):
    run = completed_run_with_outputs(workspace, cast["carol"], {"outputs/model.pkl": b"w"})
    with pytest.raises(registry.RegistryError) as caught:
        registry.register_from_run(run, cast["carol"], "m", paths)
    assert message in str(caught.value)
    assert not RegisteredModel.objects.exists()


def test_outputs_stored_before_hashes_were_recorded_are_hashed_once_when_registered(cast, workspace):
    run = make_run(workspace, cast["carol"])
    (storage.run_dir(run.pk) / "outputs").mkdir(parents=True)
    (storage.run_dir(run.pk) / "outputs/model.pkl").write_bytes(b"old weights")
    version = registry.register_from_run(run, cast["carol"], "m", ["outputs/model.pkl"])
    assert blobs.path(version.files.get().sha256).read_bytes() == b"old weights"


@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_get_distinct_consecutive_versions(cast, workspace):
    run = completed_run_with_outputs(workspace, cast["carol"], {"outputs/model.pkl": b"w"})
    results, errors = [], []
    barrier = threading.Barrier(6)

    def register():
        try:
            barrier.wait()
            results.append(registry.register_from_run(run, cast["carol"], "raced", ["outputs/model.pkl"]).version)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=register) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert RegisteredModel.objects.filter(name="raced").count() == 1


def test_aliases_move_with_their_history_and_resolve(cast, workspace):
    run = completed_run_with_outputs(workspace, cast["carol"], {"outputs/model.pkl": b"w"})
    v1, v2, v3 = (registry.register_from_run(run, cast["carol"], "m", ["outputs/model.pkl"]) for _ in range(3))
    registry.set_alias(v2, "production", cast["carol"])
    registry.set_alias(v3, "production", cast["alice"])
    registry.set_alias(v1, "staging", cast["carol"])
    assert registry.resolve(workspace, "m@production") == v3
    assert registry.resolve(workspace, "m@staging") == v1
    assert registry.resolve(workspace, "m:2") == v2
    assert registry.resolve(workspace, "m") == v3 == registry.resolve(workspace, "m:latest")
    assert registry.resolve(workspace, "m@latest") == v3
    history = [(c.alias, c.from_version, c.to_version, c.by.username) for c in AliasChange.objects.order_by("id")]
    assert history == [("production", None, 2, "carol"), ("production", 2, 3, "alice"), ("staging", None, 1, "carol")]
    for reference, message in (("m@canary", "has no alias 'canary'"), ("m:9", "has no version 9"),
                               ("nope", "No model named 'nope'"), ("m:x", "is not a version")):
        with pytest.raises(registry.RegistryError) as caught:
            registry.resolve(workspace, reference)
        assert message in str(caught.value)
    with pytest.raises(registry.RegistryError) as caught:
        registry.set_alias(v1, "latest", cast["carol"])
    assert "always means the newest version" in str(caught.value)
    with pytest.raises(registry.RegistryError):
        registry.set_alias(v1, "Prod Uction", cast["carol"])


def test_deleting_an_uploaded_version_frees_its_bytes_and_keeps_what_others_hold(cast, workspace, settings):
    big, shared = os.urandom(3_000_000), os.urandom(1_000_000)
    with uploads.StagedModel() as staged:
        import io

        staged.add("weights.bin", io.BytesIO(big))
        staged.add("vocab.txt", io.BytesIO(shared))
        staged.finish()
        first = registry.register_staged(workspace, cast["carol"], "m", staged)
    with uploads.StagedModel() as staged:
        staged.add("vocab.txt", io.BytesIO(shared))
        staged.finish()
        registry.register_staged(workspace, cast["carol"], "m", staged)
    before = disk_bytes(settings.DATA_DIR)
    freed = registry.delete_version(first, cast["alice"])
    assert freed == len(big)
    assert before - disk_bytes(settings.DATA_DIR) >= len(big)
    assert blobs.exists(ModelFile.objects.get(path="vocab.txt").sha256)  # version 2 still holds it
    assert list(ModelVersion.objects.values_list("version", flat=True)) == [2]


def test_deleting_a_version_registered_from_a_run_leaves_the_runs_output(cast, workspace):
    run = completed_run_with_outputs(workspace, cast["carol"], {"outputs/model.pkl": b"w" * 10_000})
    version = registry.register_from_run(run, cast["carol"], "m", ["outputs/model.pkl"])
    assert registry.delete_version(version, cast["alice"]) == 0  # the bytes are the run's output too
    assert (storage.run_dir(run.pk) / "outputs/model.pkl").read_bytes() == b"w" * 10_000


def test_a_version_a_deployment_serves_cannot_be_deleted(cast, workspace):
    run = completed_run_with_outputs(workspace, cast["carol"], {"outputs/model.pkl": b"w"})
    version = registry.register_from_run(run, cast["carol"], "m", ["outputs/model.pkl"])
    endpoint = Endpoint.objects.create(workspace=workspace, name="digits")
    Deployment.objects.create(endpoint=endpoint, name="blue", model_version=version,
                              compute_target=workspace.compute_targets.get(name="local"))
    with pytest.raises(registry.RegistryError) as caught:
        registry.delete_version(version, cast["alice"])
    assert str(caught.value) == ("m:1 cannot be deleted: it is in use by deployment blue of endpoint digits. "
                                 "Delete or move that deployment first.")
    assert caught.value.status == 409
    assert ModelVersion.objects.filter(pk=version.pk).exists()
    assert blobs.exists(version.files.get().sha256)


def test_an_archived_model_takes_no_new_version_until_unarchived(cast, workspace):
    run = completed_run_with_outputs(workspace, cast["carol"], {"outputs/model.pkl": b"w"})
    version = registry.register_from_run(run, cast["carol"], "m", ["outputs/model.pkl"])
    registry.set_archived(version.model, True)
    with pytest.raises(registry.RegistryError) as caught:
        registry.register_from_run(run, cast["carol"], "m", ["outputs/model.pkl"])
    assert "is archived" in str(caught.value)
    registry.set_archived(version.model, False)
    assert registry.register_from_run(run, cast["carol"], "m", ["outputs/model.pkl"]).version == 2


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "bad name!"}, "cannot be a model name"),
    ({"tags": {"bad key!": "x"}}, "tag keys are 1-128"),
    ({"tags": {"k": "evil\u202etxt"}}, "U+202E"),
    ({"description": "x" * 10_001}, "at most 10,000 characters"),
    ({"properties": {f"p{i}": "v" for i in range(101)}}, "At most 100 properties."),
])
def test_bad_fields_are_refused_with_a_clear_message(cast, workspace, fields, message):
    run = completed_run_with_outputs(workspace, cast["carol"], {"outputs/model.pkl": b"w"})
    arguments = {"name": "m", **fields}
    name = arguments.pop("name")
    with pytest.raises(registry.RegistryError) as caught:
        registry.register_from_run(run, cast["carol"], name, ["outputs/model.pkl"], **arguments)
    assert message in str(caught.value)
