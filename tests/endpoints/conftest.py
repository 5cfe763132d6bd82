"""Endpoints' tests: the real gateway and controller processes against the test database, models registered the way
a run registers them, and scoring calls made over HTTP as a client makes them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from endpoints.models import Deployment
from models_registry import registry
from tests import services
from tests.models_registry.conftest import completed_run_with_outputs

IDENTITY = """\
import json, os

def init():
    global prefix
    prefix = open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "prefix.txt")).read().strip()
    print("init done", prefix, flush=True)

def run(raw_data):
    return {"echo": json.loads(raw_data), "by": prefix}
"""


def register_files(workspace, user, name: str, files: dict[str, bytes]):
    """A version whose files are `files` (paths relative to the model folder), registered from a run's outputs."""
    run = completed_run_with_outputs(workspace, user, {f"outputs/{path}": content for path, content in files.items()},
                                     experiment=f"train-{name}")
    return registry.register_from_run(run, user, name, ["outputs"])


def wait_state(deployment: Deployment, *states: str, timeout: float = 120) -> Deployment:
    return services.wait_deployment_state(deployment, *states, timeout=timeout)


def call(url: str, body=None, *, key: str | None = None, headers: dict | None = None, method: str | None = None,
         timeout: float = 30) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request, whatever the status."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def scoring_url(gateway_url: str, endpoint) -> str:
    return f"{gateway_url}/endpoints/{endpoint.workspace.name}/{endpoint.name}/score"
