"""The SDK's log_param and set_params in a real run: a real worker runs a script shaped like the digits example's
sweep, its SDK sends the parameters to the real web server, and the compare page lines the children up."""

from __future__ import annotations

import pytest

from runs import parameters
from runs.models import ParameterSource, RunParameter, RunStatus
from tests.conftest import login, py_upload
from tests.runs.test_execution_e2e import submit, wait_final
from tests.runs.test_telemetry_e2e import target, telemetry_worker  # noqa: F401 - fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
COMPARE = "/w/lab/experiments/mnist/compare/"

SWEEP = """\
import argparse
from studio_sdk import Run

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--learning-rate", type=float, default=0.01)
parser.add_argument("--sweep", default="")
args = parser.parse_args()
run = Run.get_context()
for rate in [float(r) for r in args.sweep.split(",") if r]:
    child = run.child_run(name=f"lr={rate}")
    child.set_params({"learning_rate": rate, "epochs": args.epochs})
    child.log("accuracy", 1 - rate)
    child.complete()
run.log_param("learning_rate", args.learning_rate)
run.log_param("epochs", args.epochs)
print("done", flush=True)
"""


def test_a_scripts_logged_parameters_arrive_through_the_real_server(client, cast, workspace, telemetry_worker,  # noqa: F811
                                                                    target):  # noqa: F811
    login(client, cast["carol"])
    run = submit(client, workspace, py_upload(SWEEP), compute_target="telemetry", experiment="mnist",
                 arguments="--epochs 4 --learning-rate 0.5 --sweep 0.001,0.1")
    wait_final(run, timeout=90)
    assert run.status == RunStatus.COMPLETED, run.reason
    assert parameters.as_dict(run) == {"epochs": 4, "learning_rate": 0.5, "sweep": "0.001,0.1"}
    sources = dict(RunParameter.objects.filter(run=run).values_list("name", "source"))
    assert sources == {"epochs": ParameterSource.SCRIPT, "learning_rate": ParameterSource.SCRIPT,
                       "sweep": ParameterSource.ARGUMENTS}
    children = list(run.children.order_by("id"))
    response = client.get(COMPARE, {"run": [str(child.pk) for child in children]})
    assert ("<code>learning_rate</code></th><td><code>0.001</code></td><td><code>0.1</code></td>"
            in response.content.decode())
