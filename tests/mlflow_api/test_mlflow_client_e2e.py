"""An unmodified MLflow script, run by the real MLflow client (mlflow-skinny, pinned in requirements-test.txt) in a
process of its own against the real web server, with nothing but MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN set;
then what it logged, read back through the studio's own REST API and pages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from models_registry.models import ModelVersion
from runs.models import Run, RunOutput, RunStatus
from studio.models import ApiToken
from tests.conftest import login, text
from tests.mlflow_api.conftest import client_env
from tests.studio.test_request_limits import answer, raw_request

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCRIPT = """\
import json, os, tempfile

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [value * 2 for value in model_input]


mlflow.set_experiment("mlflow-digits")
with mlflow.start_run(run_name="first-mlflow-run") as run:
    mlflow.log_param("lr", 0.01)
    mlflow.log_params({"epochs": 3, "optimizer": "adam"})
    for step in range(20):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    mlflow.log_metrics({"accuracy": 0.9, "f1": 0.8}, step=19)
    mlflow.set_tag("team", "vision")
    folder = tempfile.mkdtemp()
    notes = os.path.join(folder, "notes.txt")
    with open(notes, "w") as handle:
        handle.write("logged by mlflow")
    mlflow.log_artifact(notes)
    mlflow.log_artifact(notes, artifact_path="reports")
    doubler = mlflow.pyfunc.log_model(name="doubler", python_model=Doubler())
    classifier = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    mlflow.sklearn.log_model(classifier, name="classifier", serialization_format="cloudpickle")  # no skops here
    run_id = run.info.run_id

version = mlflow.register_model(doubler.model_uri, "doubler")
client = MlflowClient()
client.set_registered_model_alias("doubler", "champion", version.version)
history = client.get_metric_history(run_id, "loss")
fetched = client.get_run(run_id)
found = mlflow.search_runs(output_format="list")
filtered = mlflow.search_runs(filter_string="metrics.accuracy > 0.5 and params.optimizer = 'adam'",
                              output_format="list")
model = mlflow.pyfunc.load_model("models:/doubler/1")
champion = mlflow.pyfunc.load_model("models:/doubler@champion")
print(json.dumps({
    "run_id": run_id,
    "version": version.version,
    "history": [[point.step, point.value] for point in history],
    "status": fetched.info.status,
    "run_name": fetched.info.run_name,
    "params": fetched.data.params,
    "metrics": fetched.data.metrics,
    "tags": fetched.data.tags,
    "artifacts": sorted((item.path, item.is_dir, item.file_size) for item in client.list_artifacts(run_id)),
    "reports": [item.path for item in client.list_artifacts(run_id, "reports")],
    "found": [item.info.run_id for item in found],
    "filtered": [item.info.run_id for item in filtered],
    "prediction": list(model.predict([1, 2, 3])),
    "champion": list(champion.predict([5])),
}))
"""


def run_script(env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-5000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_unmodified_mlflow_script_logs_a_run_and_registers_a_model(web, cast, client):
    token = ApiToken.issue(cast["carol"], "mlflow")[1]
    result = run_script(client_env(web, token))

    # What the MLflow client read back.
    run_id = result["run_id"]
    assert len(run_id) == 32 and result["version"] == "1"
    assert result["history"] == [[step, 1.0 / (step + 1)] for step in range(20)]
    assert result["status"] == "FINISHED" and result["run_name"] == "first-mlflow-run"
    assert result["params"] == {"lr": "0.01", "epochs": "3", "optimizer": "adam"}
    assert result["metrics"] == {"loss": 0.05, "accuracy": 0.9, "f1": 0.8}
    assert result["tags"]["team"] == "vision" and result["tags"]["mlflow.runName"] == "first-mlflow-run"
    assert result["tags"]["mlflow.source.name"] == "-c"
    assert [tuple(item) for item in result["artifacts"]] == [
        ("classifier", True, None), ("doubler", True, None), ("notes.txt", False, 16), ("reports", True, None)]
    assert result["reports"] == ["reports/notes.txt"]
    assert result["found"] == [run_id] and result["filtered"] == [run_id]
    assert result["prediction"] == [2, 4, 6] and result["champion"] == [10]

    # The same run through the studio's own REST API: an ordinary run.
    studio_id = int(result["tags"]["studio.run_id"])
    api = httpx.Client(base_url=f"{web}/api/v1/workspaces/lab", headers={"Authorization": f"Token {token}"})
    run = api.get(f"/runs/{studio_id}").json()
    assert run["experiment"] == "mlflow-digits" and run["display_name"] == "first-mlflow-run"
    assert run["status"] == "Completed" and run["ended_at"] and run["started_at"] and run["created_by"] == "carol"
    assert run["parameters"] == {"epochs": "3", "lr": "0.01", "optimizer": "adam"}
    assert run["tags"] == {"team": "vision"} and run["entry_script"] == "-c"
    assert [change["status"] for change in run["status_history"]] == ["Running", "Completed"]
    series = {item["name"]: item for item in api.get(f"/runs/{studio_id}/metrics").json()}
    assert {"loss", "accuracy", "f1"} <= series.keys()
    loss = api.get(f"/runs/{studio_id}/metrics/{series['loss']['id']}").json()
    assert loss["count"] == 20
    files = {item["path"]: item["size"] for item in api.get(f"/runs/{studio_id}/files").json()}
    assert files["outputs/notes.txt"] == 16 and files["outputs/reports/notes.txt"] == 16
    assert {"outputs/doubler/MLmodel", "outputs/doubler/python_model.pkl", "outputs/classifier/MLmodel",
            "outputs/classifier/model.pkl"} <= files.keys()
    assert api.get(f"/runs/{studio_id}/files/outputs/notes.txt").text == "logged by mlflow"

    # The registered version is the studio registry's, made of the run's outputs with MLmodel at its top.
    version = api.get("/models/doubler/versions/1").json()
    assert version["run"] == studio_id and version["source"] == "run" and version["aliases"] == ["champion"]
    assert version["framework"] == "mlflow-pyfunc"
    assert {"MLmodel", "python_model.pkl", "python_env.yaml"} <= {item["path"] for item in version["files"]}
    assert api.get("/model-versions/doubler@champion").json()["version"] == 1

    # The run page says who tracked it; the MLflow id and the studio's id both name the run.
    login(client, cast["bob"])
    page = text(client.get(f"/w/lab/runs/{studio_id}/"))
    assert "Logged by an MLflow client" in page and "none: logged by an MLflow client" in page
    headers = {"Authorization": f"Bearer {ApiToken.issue(cast['bob'], 'read')[1]}"}
    for ref in (run_id, str(studio_id)):
        got = httpx.get(f"{web}/mlflow/lab/api/2.0/mlflow/runs/get", params={"run_id": ref}, headers=headers)
        assert got.status_code == 200 and got.json()["run"]["info"]["run_id"] == run_id


def test_a_body_over_the_upload_limit_is_refused_before_it_is_read_in_mlflows_shape(web, cast):
    token = ApiToken.issue(cast["carol"], "mlflow")[1]
    sock = raw_request(web, f"PUT /mlflow/lab/api/2.0/mlflow-artifacts/artifacts/1/ab/artifacts/huge.bin HTTP/1.1\r\n"
                            f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                            f"Content-Length: {100 * 1024**3}\r\n\r\n")
    reply = answer(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'{"error_code":"RESOURCE_EXHAUSTED","message":"The request body is too large' in reply


def test_without_a_token_the_client_is_told_how_to_give_one(web, cast):
    env = client_env(web, "")
    env.pop("MLFLOW_TRACKING_TOKEN")
    done = subprocess.run([sys.executable, "-c", "import mlflow; mlflow.set_experiment('x')"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "UNAUTHENTICATED" in done.stderr and "MLFLOW_TRACKING_TOKEN" in done.stderr


def test_the_readmes_mlflow_example_runs_as_written(web, cast, tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## MLflow clients", 1)[1].split("\n## ", 1)[0]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    env = client_env(web, ApiToken.issue(cast["carol"], "readme")[1])
    done = subprocess.run([sys.executable, "-c", example], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-5000:]
    assert done.stdout.strip().splitlines()[-1] == "[2, 4, 6]"
    run = Run.objects.get(experiment__name="mlflow-demo")
    assert run.parameters.count() == 2 and run.tags == {"team": "vision"} and run.status == RunStatus.COMPLETED
    assert RunOutput.objects.filter(run=run, path="outputs/notes.txt").exists()
    assert ModelVersion.objects.get(model__name="doubler").run == run


AUTOLOG = """\
import json
import mlflow
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

mlflow.set_experiment("autologged")
mlflow.sklearn.autolog(serialization_format="cloudpickle")
X, y = load_iris(return_X_y=True)
with mlflow.start_run() as run:
    LogisticRegression(max_iter=300).fit(X, y)
fetched = mlflow.MlflowClient().get_run(run.info.run_id)
print(json.dumps({"metrics": sorted(fetched.data.metrics), "params": len(fetched.data.params),
                  "datasets": [[item.dataset.name, item.dataset.source_type, [(t.key, t.value) for t in item.tags]]
                               for item in fetched.inputs.dataset_inputs],
                  "studio_id": fetched.data.tags["studio.run_id"]}))
"""


def test_sklearn_autologging_logs_everything_without_a_warning(web, cast, client):
    """Autologging calls routes a hand-written script does not (log_inputs, for the training dataset); a route the
    studio lacked showed as "Encountered unexpected error during sklearn autologging" and lost that part."""
    token = ApiToken.issue(cast["carol"], "mlflow")[1]
    done = subprocess.run([sys.executable, "-c", AUTOLOG], env=client_env(web, token), capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-5000:]
    assert "unexpected error" not in done.stderr and "ENDPOINT_NOT_FOUND" not in done.stderr, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"training_accuracy_score", "training_f1_score", "training_score"} <= set(result["metrics"])
    assert result["params"] >= 10
    assert len(result["datasets"]) == 1
    name, source_type, tags = result["datasets"][0]
    assert source_type == "code" and ["mlflow.data.context", "train"] in tags
    login(client, cast["bob"])
    page = text(client.get(f"/w/lab/runs/{result['studio_id']}/"))
    assert f"<code>{name}</code>" in page and "train" in page  # the run page lists the dataset it read
