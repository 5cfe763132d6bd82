"""Helpers of the MLflow API's tests: requests as the MLflow client sends them (a personal token as a bearer token),
and the environment that points an unmodified MLflow client at a studio."""

from __future__ import annotations

import os
import time

import orjson
import pytest
from django.test import Client

from studio.models import ApiToken

API = "/mlflow/lab/api/2.0/mlflow/"


def client_env(url: str, token: str) -> dict[str, str]:
    """The environment of a process running an MLflow script against the studio at `url`, workspace `lab`: what a
    user exports. Telemetry is off and retries are none, so a failure shows at once instead of after minutes of
    back-off."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MLFLOW_", "STUDIO_", "DJANGO_", "DATABASE_URL", "PYTHONPATH"))}
    env.update(MLFLOW_TRACKING_URI=f"{url}/mlflow/lab", MLFLOW_TRACKING_TOKEN=token,
               MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", PYTHONUNBUFFERED="1")
    return env


class MlflowCaller:
    """Calls the MLflow API in-process as `user` would through the MLflow client."""

    def __init__(self, user=None, token: str | None = None):
        self.client = Client()
        self.token = token if token is not None else (ApiToken.issue(user, "mlflow")[1] if user else "")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def post(self, route: str, body, method: str = "POST"):
        data = body if isinstance(body, bytes | str) else orjson.dumps(body)
        return self.client.generic(method, API + route, data, content_type="application/json", headers=self.headers())

    def get(self, route: str, **query):
        return self.client.get(API + route, query, headers=self.headers())

    def new_run(self, experiment: str = "exp", **fields) -> str:
        found = self.get("experiments/get-by-name", experiment_name=experiment)
        experiment_id = (found.json()["experiment"]["experiment_id"] if found.status_code == 200 else
                         self.post("experiments/create", {"name": experiment}).json()["experiment_id"])
        response = self.post("runs/create", {"experiment_id": experiment_id, "start_time": now_ms(), **fields})
        assert response.status_code == 200, response.content
        return response.json()["run"]["info"]["run_id"]


def now_ms() -> int:
    return int(time.time() * 1000)


def assert_error(response, status: int, code: str, *fragments: str) -> None:
    """An MLflow-shaped error: the status, `error_code` and a message holding each fragment."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error_code"] == code, body
    for fragment in fragments:
        assert fragment in body["message"], body["message"]


@pytest.fixture
def alice_mlflow(cast):
    return MlflowCaller(cast["alice"])


@pytest.fixture
def carol_mlflow(cast):
    return MlflowCaller(cast["carol"])
