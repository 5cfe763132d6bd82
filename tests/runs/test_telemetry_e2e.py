"""The example's telemetry end to end: a real worker runs it, its SDK posts to the real ASGI server."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs import parameters, storage
from runs.models import MetricEntry, MetricSeries, Run, RunStatus
from tests import services
from tests.conftest import login, py_upload
from tests.faults.conftest import EPOCHS
from tests.runs.test_execution_e2e import submit, wait_final, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def telemetry_worker(e2e_env, web, studio_services):
    """A worker whose runs reach the test's web server for the SDK."""
    env = {**e2e_env, "STUDIO_PUBLIC_URL": web, "STUDIO_SYSTEM_METRICS_SECONDS": "0.5"}
    service = services.start_worker(env, studio_services["base"], queues="telemetry", concurrency=1)
    yield service
    service.stop()


@pytest.fixture
def target(workspace):
    return workspace.compute_targets.create(name="telemetry", queue="telemetry")


def values(run: Run, name: str) -> list[float]:
    from runs import metrics

    points, _ = metrics.read_scalars(MetricSeries.objects.get(run=run, name=name), max_points=100_000)
    return points.values.tolist()


def test_the_examples_metrics_table_image_and_child_runs_arrive(client, cast, workspace, telemetry_worker, target,
                                                               examples_dir, sklearn_environment):
    login(client, cast["carol"])
    source = (examples_dir / "digits" / "train.py").read_text()
    run = submit(client, workspace, py_upload(source), compute_target="telemetry",
                 arguments="--epochs 5 --sweep 0.001,0.1 --pause 0.4 --register digits-classifier",
                 environment="Studio-sklearn")
    wait_final(run, timeout=120)
    log = storage.console_log_path(run.pk).read_text()
    assert run.status == RunStatus.COMPLETED, run.reason + log
    assert len(values(run, "loss")) == 5 and len(values(run, "accuracy")) == 5
    assert values(run, "loss")[0] > values(run, "loss")[-1]
    assert run.tags == {"model": "SGDClassifier", "dataset": "digits"}
    table = MetricEntry.objects.get(series__run=run, series__name="confusion_matrix").data
    assert sorted(table) == [f"pred_{d}" for d in range(10)] and sum(sum(col) for col in table.values()) == 450
    rows = list(MetricEntry.objects.filter(series__run=run, series__name="per_class").values_list("data", flat=True))
    assert [row["digit"] for row in rows] == list(range(10))
    image = MetricEntry.objects.get(series__run=run, series__name="misclassified").data
    assert image["format"] == "png"
    assert (storage.run_dir(run.pk) / image["file"]).read_bytes().startswith(b"\x89PNG")
    children = list(run.children.order_by("id"))
    assert [child.display_name for child in children] == ["lr=0.001", "lr=0.1"]
    assert all(child.status == RunStatus.COMPLETED for child in children)
    assert all(len(values(child, "loss")) == 5 and len(values(child, "final_accuracy")) == 1 for child in children)
    # Each child logged its learning rate (the compare page lines them up by it); the parent's replace the parsed ones.
    assert [parameters.as_dict(child) for child in children] == [{"epochs": 5, "learning_rate": 0.001},
                                                                {"epochs": 5, "learning_rate": 0.1}]
    assert parameters.as_dict(run) == {"epochs": 5, "learning_rate": 0.01, "pause": "0.4",
                                       "register": "digits-classifier", "sweep": "0.001,0.1"}
    assert MetricSeries.objects.filter(run=run, name="sys/cpu_percent").exists()
    assert values(run, "sys/memory_rss_mb")[0] > 10
    # --register: the model, read without unpickling it (a real scikit-learn pickle), with the run as lineage.
    from models_registry.models import ModelVersion

    version = ModelVersion.objects.get(model__name="digits-classifier")
    assert "registered digits-classifier version 1" in log
    assert (version.framework, version.details["estimator"], version.run_id) == ("scikit-learn", "SGDClassifier", run.pk)
    assert version.framework_version.count(".") >= 1 and version.lineage["metrics"]["final_accuracy"]


def test_a_script_that_reports_failure_ends_failed_and_its_token_dies_with_it(client, cast, workspace, telemetry_worker, target, web):
    import httpx

    login(client, cast["carol"])
    script = (
        "import os\n"
        "from studio_sdk import Run\n"
        "run = Run.get_context()\n"
        "run.log('loss', 1.0)\n"
        "print('TOKEN', os.environ['STUDIO_RUN_TOKEN'], flush=True)\n"
        "run.fail('accuracy below 0.9')\n"
    )
    run = submit(client, workspace, py_upload(script), compute_target="telemetry")
    wait_final(run, timeout=60)
    assert run.status == RunStatus.FAILED and run.reason == "accuracy below 0.9"
    token = storage.console_log_path(run.pk).read_text().split("TOKEN ")[1].split()[0]
    response = httpx.post(f"{web}/api/v1/runs/{run.pk}/tags", json={"tags": {"late": "1"}},
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403 and "has ended" in response.json()["error"]


def test_a_run_whose_metrics_cannot_reach_the_studio_says_so_instead_of_a_silent_success(
        client, cast, workspace, telemetry_worker, target):
    login(client, cast["carol"])
    script = (
        "import os\n"
        "os.environ['STUDIO_API_URL'] = 'http://127.0.0.1:9'  # nothing listens there\n"
        "os.environ['STUDIO_SDK_GIVE_UP_SECONDS'] = '1'\n"
        "from studio_sdk import Run\n"
        "run = Run.get_context()\n"
        "for step in range(40):\n"
        "    run.log('loss', 1.0 / (step + 1))\n"
        "print('done', flush=True)\n"
    )
    run = submit(client, workspace, py_upload(script), compute_target="telemetry")
    wait_final(run, timeout=90)
    assert run.status == RunStatus.COMPLETED and run.exit_code == 0
    assert "Not everything the script logged reached the studio: 40 metric points and 0 other records could not " \
           "be delivered to the studio (the studio at http://127.0.0.1:9 could not be reached)." in run.reason


def test_cancel_lets_the_sdk_deliver_what_the_script_logged(client, cast, workspace, telemetry_worker, target):
    login(client, cast["carol"])
    run = submit(client, workspace, py_upload(EPOCHS), compute_target="telemetry")
    log = storage.console_log_path(run.pk)
    wait_until(lambda: log.exists() and log.read_text().count("line ") >= 8, 60, "8 epochs")
    assert client.post(reverse("run_cancel", args=[workspace.name, run.pk])).status_code == 302
    wait_final(run, timeout=60)
    assert run.status == RunStatus.CANCELED
    epochs = [line for line in log.read_text().splitlines() if line.startswith("line ")]
    assert len(values(run, "epoch_loss")) == len(epochs)
