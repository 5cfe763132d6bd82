"""`run.register_model` inside a real run: a real worker runs the script, its SDK uploads the model and registers it
through the real web server."""

from __future__ import annotations

import pytest

from models_registry.models import ModelVersion
from runs import storage
from runs.models import RunStatus
from tests.conftest import login, py_upload
from tests.runs.test_execution_e2e import submit, wait_final
from tests.runs.test_telemetry_e2e import target, telemetry_worker  # noqa: F401 - fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCRIPT = """\
import os
from studio_sdk import Run
run = Run.get_context()
run.log("accuracy", 0.93)
os.makedirs("outputs/model", exist_ok=True)
with open("outputs/model/weights.bin", "wb") as handle:
    handle.write(b"w" * 10000)
with open("outputs/model/config.json", "w") as handle:
    handle.write("{}")
result = run.register_model("digits-classifier", "outputs/model", tags={"source": "sdk"},
                            properties={"epochs": "5"}, description="from the script")
print("REGISTERED", result, flush=True)
"""


def test_a_script_registers_its_model_and_the_version_points_back_at_the_run(client, cast, workspace,
                                                                           telemetry_worker, target):  # noqa: F811
    login(client, cast["carol"])
    run = submit(client, workspace, py_upload(SCRIPT), compute_target="telemetry")
    wait_final(run, timeout=90)
    log = storage.console_log_path(run.pk).read_text()
    assert run.status == RunStatus.COMPLETED, run.reason + log
    assert "REGISTERED {'name': 'digits-classifier', 'version': 1}" in log
    version = ModelVersion.objects.get()
    assert (version.run_id, version.source, version.description) == (run.pk, "run", "from the script")
    assert version.tags == {"source": "sdk"} and version.properties == {"epochs": "5"}
    assert sorted(version.files.values_list("path", "size")) == [("model/config.json", 2), ("model/weights.bin", 10000)]
    assert version.lineage["metrics"] == {"accuracy": "0.93"}
    # The files the script uploaded and the same files found in ./outputs at the end are stored once.
    stored = [item["path"] for item in storage.list_stored_files(run.pk) if item["path"].startswith("outputs/")]
    assert stored == ["outputs/model/config.json", "outputs/model/weights.bin"]
