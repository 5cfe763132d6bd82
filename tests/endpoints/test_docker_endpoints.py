"""Endpoints on a Docker target, as a client sees them: the real gateway and controller processes, instances as
containers on a real engine (skipped, saying why, without one), scoring over HTTP with the endpoint's key.

Only one test needs packages (inference-schema for a decorated script): its environment is the one image this file
builds. The others run on the base image's python3 (a deployment without an environment).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import docker as docker_sdk
import pytest
from django.conf import settings

from endpoints import services as endpoint_services
from endpoints.models import Deployment, DeploymentEvent, DeploymentState, Endpoint, Instance, RequestRecord
from endpoints.reconciler import console_path
from environments.models import Environment, EnvironmentKind
from models_registry import registry
from studio.redis_client import get_redis
from tests.conftest import TEST_BASE_IMAGE
from tests.docker.conftest import docker_engine, docker_target  # noqa: F401 - fixtures shared with tests/docker
from tests.endpoints.conftest import IDENTITY, register_files, scoring_url, wait_state
from tests.endpoints.conftest import call as call_as_is
from tests.services import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.django_db(transaction=True)]

DECORATED = """\
import os

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    global scale
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "scale.txt")) as handle:
        scale = float(handle.read())
    print("decorated init: scale", scale, flush=True)


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])))
@input_schema("label", StandardPythonParameterType("a"))
@output_schema(StandardPythonParameterType({"total": 3.0, "label": "a", "shape": [1, 2]}))
def run(data, label):
    return {"total": float(data.sum() * scale), "label": label, "shape": list(data.shape)}
"""

RAW = """\
import json

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    if request.method != "POST":
        return AMLResponse("POST only", 405)
    answer = {"got": request.get_json(), "tag": request.headers.get("X-Client-Tag"),
              "key": request.headers.get("Authorization")}
    return AMLResponse(json.dumps(answer), 201, {"X-Scored-By": "raw", "Content-Type": "application/json"})
"""

MODEL_PATH = """\
import json

from azureml.core.model import Model


def init():
    global weights
    with open(Model.get_model_path("weights")) as handle:
        weights = json.load(handle)


def run(raw_data):
    x = json.loads(raw_data)["x"]
    return {"y": weights["a"] * x + weights["b"]}
"""

SCRIPT_V2 = IDENTITY.replace('"by": prefix}', '"by": prefix, "script": 2}')
assert SCRIPT_V2 != IDENTITY

CHATTY = IDENTITY.replace("def run(raw_data):\n", "def run(raw_data):\n    print('scoring', raw_data, flush=True)\n")
assert CHATTY != IDENTITY

FAILING = """\
def init():
    print("loading the model", flush=True)
    raise RuntimeError("the model file is corrupt: boom-4217")


def run(raw_data):
    return raw_data
"""


# Fixtures and helpers -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def engine(docker_engine):  # noqa: F811 - the shared fixture, by name
    """Every test here needs the engine: without one, they are skipped before any service starts."""
    return docker_engine


@pytest.fixture(scope="module")
def built_images(docker_engine):  # noqa: F811
    """Images this module builds, removed at its end."""
    made: list[str] = []
    yield made
    for name in made:
        with contextlib.suppress(docker_sdk.errors.DockerException):
            docker_engine.images.remove(name, force=True)


@pytest.fixture
def studio(workspace, alice, gateway, controller, docker_target, engine):  # noqa: F811
    """The services, and at the end of each test its endpoints deleted and their containers gone (the database is
    flushed after each test: the controller must not be left with containers nothing names)."""
    yield
    pks = list(Deployment.objects.values_list("pk", flat=True))
    for endpoint in Endpoint.objects.filter(deleting=False):
        endpoint_services.delete_endpoint(endpoint, alice)
    try:
        wait_until(lambda: not Endpoint.objects.exists(), 30, "the controller to delete the endpoints")
        wait_until(lambda: not containers(engine, pks), 30, "the containers to go")
    finally:
        for container in containers(engine, pks):
            with contextlib.suppress(docker_sdk.errors.DockerException):
                container.remove(force=True)


def containers(engine, deployment_pks) -> list:
    """The containers of these deployments, by the labels the controller gives them (the controller shares the test's
    data dir, so its installation id)."""
    instance_id = (Path(settings.DATA_DIR) / "instance_id").read_text().strip()
    found = []
    for pk in deployment_pks:
        found += engine.containers.list(all=True, filters={
            "label": [f"studio.deployment={pk}", f"studio.instance={instance_id}"]})
    return found


def call(url: str, body=None, **options) -> tuple[int, dict, bytes]:
    """(status, headers with lower-case names, body) of one request."""
    status, headers, content = call_as_is(url, body, **options)
    return status, {name.lower(): value for name, value in headers.items()}, content


def serving(deployment: Deployment, gateway_url: str, timeout: float) -> None:
    """Healthy, and routed to by the gateway (which learns of it a moment after the controller made it live)."""
    wait_state(deployment, DeploymentState.HEALTHY, timeout=timeout)
    url, key = scoring_url(gateway_url, deployment.endpoint), endpoint_services.keys(deployment.endpoint)["primary"]

    def routed() -> bool:
        status, headers, _ = call(url, {"probe": 1}, key=key, headers={"azureml-model-deployment": deployment.name})
        return status != 503 and headers.get("azureml-model-deployment") == deployment.name  # not 404: known

    wait_until(routed, 10, "the gateway to route to the deployment")


def deploy(endpoint, name: str, version, script: str, target, **options) -> Deployment:
    return endpoint_services.create_deployment(endpoint, None, name, model=f"{version.model.name}:{version.version}",
                                               compute_target=target, script=("score.py", script.encode()), **options)


class Client:
    """A client on one kept-alive connection to the gateway, as a scoring client is."""

    def __init__(self, url: str, key: str):
        split = urlsplit(url)
        self.path, self.key = split.path, key
        self.connection = http.client.HTTPConnection(split.hostname, split.port, timeout=30)

    def score(self, body, headers: dict | None = None) -> tuple[int, dict, bytes]:
        data = json.dumps(body).encode()
        try:
            self.connection.request("POST", self.path, data, {
                "Authorization": f"Bearer {self.key}", "Content-Type": "application/json", **(headers or {})})
            response = self.connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        except (OSError, http.client.HTTPException) as error:
            self.connection.close()
            return 0, {}, str(error).encode()

    def close(self) -> None:
        self.connection.close()


class Loop(threading.Thread):
    """Scores without a pause until stopped; keeps every answer in order."""

    def __init__(self, url: str, key: str):
        super().__init__(daemon=True)
        self.client = Client(url, key)
        self.answers: list[tuple[int, bytes]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            status, _, body = self.client.score({"n": len(self.answers)})
            self.answers.append((status, body))
        self.client.close()

    def stop(self) -> list[tuple[int, bytes]]:
        self.halt.set()
        self.join(timeout=30)
        return self.answers

    def failures(self) -> list[tuple[int, bytes]]:
        return [(status, body) for status, body in self.answers if status != 200]


def echo_versions(workspace, alice, *prefixes: str):
    return [register_files(workspace, alice, "echo", {"prefix.txt": prefix.encode()}) for prefix in prefixes]


# A decorated script, keys and swagger ---------------------------------------------------------------------------------


def test_a_decorated_script_scores_with_the_key_only_and_its_swagger_shows_the_decorators(
        workspace, alice, gateway, docker_target, built_images, studio):  # noqa: F811
    environment = Environment(workspace=workspace, name="scoring", kind=EnvironmentKind.SYSTEM_MANAGED,
                              python_packages="numpy==1.26.4\ninference-schema==1.8").save_new_version()
    built_images.append(environment.image_name)
    version = register_files(workspace, alice, "scaler", {"scale.txt": b"10"})
    endpoint = endpoint_services.create_endpoint(workspace, alice, "decorated")
    deployment = deploy(endpoint, "blue", version, DECORATED, docker_target, environment=environment)
    serving(deployment, gateway, timeout=240)
    url = scoring_url(gateway, endpoint)
    keys = endpoint_services.keys(endpoint)

    status, headers, body = call(url, {"data": [[1, 2], [3, 4]], "label": "x"}, key=keys["primary"])
    assert status == 200, body
    assert json.loads(body) == {"total": 100.0, "label": "x", "shape": [2, 2]}
    assert headers["azureml-model-deployment"] == "blue"
    assert call(url, {"data": [[1, 2]], "label": "x"})[0] == 401
    assert call(url, {"data": [[1, 2]], "label": "x"}, key="not-the-key")[0] == 401
    assert call(url, {"data": [[1, 2]], "label": "x"}, key=keys["secondary"])[0] == 200
    status, _, body = call(url, {"label": "x"}, key=keys["primary"])
    assert status == 400 and "data" in json.loads(body)["message"]

    swagger_url = url.rsplit("/", 1)[0] + "/swagger.json"
    assert call(swagger_url)[0] == 401
    status, _, body = call(swagger_url, key=keys["primary"])
    assert status == 200, body
    document = json.loads(body)
    service_input = document["definitions"]["ServiceInput"]
    assert service_input["example"] == {"data": [[1.0, 2.0]], "label": "a"}
    assert set(service_input["properties"]) == {"data", "label"}
    assert document["definitions"]["ServiceOutput"]["example"] == {"total": 3.0, "label": "a", "shape": [1, 2]}

    instance = deployment.instances.get()
    wait_until(lambda: "decorated init: scale 10.0" in _read(console_path(instance)), 10,
               "init()'s print to reach the instance's console file")
    live = b"\n".join(value for _, fields in get_redis().xrange(instance.stream_key) for value in fields.values())
    assert b"decorated init: scale 10.0" in live


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# Azure's scripts, unmodified ------------------------------------------------------------------------------------------


def test_azure_style_scripts_score_unmodified_and_the_deployment_header_picks_one(
        workspace, alice, gateway, docker_target, studio):  # noqa: F811
    (echo,) = echo_versions(workspace, alice, "plain-v1")
    weights = register_files(workspace, alice, "weights", {"weights.json": b'{"a": 2, "b": 1}'})
    endpoint = endpoint_services.create_endpoint(workspace, alice, "azure-style")
    deployments = [deploy(endpoint, "plain", echo, IDENTITY, docker_target),
                   deploy(endpoint, "raw", echo, RAW, docker_target),
                   deploy(endpoint, "modelpath", weights, MODEL_PATH, docker_target)]
    for deployment in deployments:
        serving(deployment, gateway, timeout=60)
    url = scoring_url(gateway, endpoint)
    key = endpoint_services.keys(endpoint)["primary"]

    for _ in range(5):  # all the traffic goes to the first deployment
        status, headers, body = call(url, {"x": 3}, key=key)
        assert (status, headers["azureml-model-deployment"]) == (200, "plain"), body
        assert json.loads(body) == {"echo": {"x": 3}, "by": "plain-v1"}

    status, headers, body = call(url, {"x": 3}, key=key, headers={"azureml-model-deployment": "raw",
                                                                 "X-Client-Tag": "t-1"})
    assert status == 201, body
    assert headers["x-scored-by"] == "raw" and headers["azureml-model-deployment"] == "raw"
    assert json.loads(body) == {"got": {"x": 3}, "tag": "t-1", "key": None}  # the client's headers, not its key

    status, headers, body = call(url, {"x": 3}, key=key, headers={"azureml-model-deployment": "modelpath"})
    assert (status, json.loads(body)) == (200, {"y": 7}), body
    assert headers["azureml-model-deployment"] == "modelpath"

    status, _, body = call(url, {"x": 3}, key=key, headers={"azureml-model-deployment": "nosuch"})
    assert status == 404 and "nosuch" in json.loads(body)["message"]

    plain = deployments[0].instances.get()
    wait_until(lambda: "init done plain-v1" in _read(console_path(plain)), 10, "init()'s print in the console")


# Traffic: split, header routing, mirroring ----------------------------------------------------------------------------


def test_traffic_splits_80_20_and_a_mirror_gets_its_share_whose_answers_never_reach_the_client(
        workspace, alice, gateway, docker_target, studio):  # noqa: F811
    blue, green, shadow = echo_versions(workspace, alice, "blue", "green", "shadow")
    endpoint = endpoint_services.create_endpoint(workspace, alice, "split")
    deployments = [deploy(endpoint, "blue", blue, IDENTITY, docker_target),
                   deploy(endpoint, "green", green, IDENTITY, docker_target),
                   # a mirror's copies are not held back by the client's answers, so they can pile up past the
                   # default 4 at once, where the gateway answers the mirror 429 (right, but not what this checks)
                   deploy(endpoint, "shadow", shadow, IDENTITY, docker_target, max_concurrent_requests=64)]
    for deployment in deployments:
        serving(deployment, gateway, timeout=60)
    endpoint_services.set_traffic(endpoint, alice, traffic={"blue": 80, "green": 20}, mirror={"shadow": 20})
    url = scoring_url(gateway, endpoint)
    key = endpoint_services.keys(endpoint)["primary"]
    wait_until(lambda: _deployment_of(url, key) == "green", 10, "the new split to reach the gateway", 0)

    answers: list[tuple[int, dict, bytes]] = []

    def score(thread: int) -> None:  # the request ids name this test's requests in the records
        client = Client(url, key)
        answers.extend(client.score({"x": i}, {"x-ms-request-id": f"split-{thread}-{i}"}) for i in range(250))
        client.close()

    threads = [threading.Thread(target=score, args=(thread,)) for thread in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _, _ in answers] == [200] * 1000, [a for a in answers if a[0] != 200][:3]
    by_header = Counter(headers["azureml-model-deployment"] for _, headers, _ in answers)
    assert set(by_header) == {"blue", "green"}
    assert 76 <= by_header["blue"] / 10 <= 84, by_header
    by_answer = Counter(json.loads(body)["by"] for _, _, body in answers)
    assert by_answer == by_header  # each answer came from the deployment its header names; none from the mirror

    assert {headers["x-ms-request-id"][:6] for _, headers, _ in answers} == {"split-"}

    records = RequestRecord.objects.filter(endpoint=endpoint, request_id__startswith="split-")
    wait_until(lambda: records.filter(mirrored=False).count() == 1000, 20, "the requests to be recorded")
    time.sleep(1)  # the writer's next batch: the last mirrored ones
    mirrored = records.filter(mirrored=True)
    assert 150 <= mirrored.count() <= 250, mirrored.count()  # 20 % of 1,000, within about 4 standard deviations
    assert set(mirrored.values_list("deployment", flat=True)) == {"shadow"}
    assert set(mirrored.values_list("status", flat=True)) == {200}

    client = Client(url, key)
    routed = [client.score({"x": 1}, {"azureml-model-deployment": "green"}) for _ in range(20)]
    client.close()
    assert {(status, headers["azureml-model-deployment"], json.loads(body)["by"])
            for status, headers, body in routed} == {(200, "green", "green")}


def _deployment_of(url: str, key: str) -> str:
    status, headers, _ = call(url, {"x": 0}, key=key)
    return headers.get("azureml-model-deployment", "") if status == 200 else ""


# Updates and failures -------------------------------------------------------------------------------------------------


def test_a_rolling_update_under_load_fails_no_request_and_switches_the_answers(
        workspace, alice, gateway, docker_target, studio):  # noqa: F811
    v1, v2 = echo_versions(workspace, alice, "v1", "v2")
    endpoint = endpoint_services.create_endpoint(workspace, alice, "rolling")
    deployment = deploy(endpoint, "blue", v1, IDENTITY, docker_target, request_timeout_ms=1000)
    serving(deployment, gateway, timeout=60)
    loop = Loop(scoring_url(gateway, endpoint), endpoint_services.keys(endpoint)["primary"])
    loop.start()
    try:
        wait_until(lambda: len(loop.answers) > 20, 10, "the loop to score")
        endpoint_services.update_deployment(deployment, alice, model=f"echo:{v2.version}")
        wait_until(lambda: _answered(loop, lambda a: a["by"] == "v2"), 60, "the answers to come from v2")
        wait_state(deployment, DeploymentState.HEALTHY, timeout=30)
        deployment.refresh_from_db()
        endpoint_services.update_deployment(deployment, alice, script=("score.py", SCRIPT_V2.encode()))
        wait_until(lambda: _answered(loop, lambda a: a.get("script") == 2), 60, "the answers to come from the new "
                                                                                "script")
        wait_until(lambda: not deployment.instances.exclude(revision=3).exists(), 30, "the old instances to go")
        time.sleep(0.5)
    finally:
        answers = loop.stop()
    assert not loop.failures(), loop.failures()[:5]
    versions = [(json.loads(body)["by"], json.loads(body).get("script", 1)) for _, body in answers]
    switches = [versions[0]] + [b for a, b in zip(versions, versions[1:], strict=False) if a != b]
    assert switches == [("v1", 1), ("v2", 1), ("v2", 2)], switches  # each switch once, never back
    assert len(answers) > 100
    deployment.refresh_from_db()
    assert (deployment.state, deployment.revision, deployment.live_revision) == (DeploymentState.HEALTHY, 3, 3)


def _answered(loop: Loop, predicate) -> bool:
    answers = loop.answers[-3:]
    return bool(answers) and all(status == 200 and predicate(json.loads(body)) for status, body in answers)


def test_a_failed_update_leaves_the_live_revision_serving(
        workspace, alice, gateway, docker_target, studio, engine):  # noqa: F811
    (version,) = echo_versions(workspace, alice, "steady")
    endpoint = endpoint_services.create_endpoint(workspace, alice, "steady")
    deployment = deploy(endpoint, "blue", version, IDENTITY, docker_target, request_timeout_ms=1000)
    serving(deployment, gateway, timeout=60)
    loop = Loop(scoring_url(gateway, endpoint), endpoint_services.keys(endpoint)["primary"])
    loop.start()
    try:
        wait_until(lambda: len(loop.answers) > 20, 10, "the loop to score")
        endpoint_services.update_deployment(deployment, alice, script=("score.py", FAILING.encode()))
        wait_state(deployment, DeploymentState.FAILED, timeout=60)
        assert "boom-4217" in deployment.reason and "revision 1 still serves" in deployment.reason
        time.sleep(3)  # past the time a replaced revision drains
        assert [i.revision for i in deployment.instances.all()] == [1]
        assert _answered(loop, lambda a: a["by"] == "steady" and "script" not in a)

        deployment.refresh_from_db()
        endpoint_services.update_deployment(deployment, alice, script=("score.py", SCRIPT_V2.encode()))
        wait_until(lambda: _answered(loop, lambda a: a.get("script") == 2), 60, "the fixed revision to answer")
        wait_state(deployment, DeploymentState.HEALTHY, timeout=30)
    finally:
        loop.stop()
    assert not loop.failures(), loop.failures()[:5]
    assert DeploymentEvent.objects.filter(endpoint=endpoint, text__contains="Revision 3 is live").exists()


def test_a_restarted_controller_adopts_the_instances_follows_their_consoles_and_removes_orphans(
        workspace, alice, gateway, controller, docker_target, studio, engine):  # noqa: F811
    (version,) = echo_versions(workspace, alice, "adopted")
    endpoint = endpoint_services.create_endpoint(workspace, alice, "adopted")
    deployment = deploy(endpoint, "blue", version, CHATTY, docker_target)
    serving(deployment, gateway, timeout=60)
    instance = deployment.instances.get()
    console, container = console_path(instance), engine.containers.get(instance.handle).id
    url, key = scoring_url(gateway, endpoint), endpoint_services.keys(endpoint)["primary"]
    assert call(url, {"mark": "before"}, key=key)[0] == 200
    wait_until(lambda: '{"mark": "before"}' in _read(console), 10, "the request's print in the console")
    instance_id = (Path(settings.DATA_DIR) / "instance_id").read_text().strip()
    orphan = engine.containers.create(TEST_BASE_IMAGE, ["sleep", "600"], labels={
        "studio.deployment": str(deployment.pk + 1000), "studio.instance": instance_id})

    loop = Loop(url, key)
    loop.start()
    try:
        logged = controller.log_path.stat().st_size
        controller.restart()
        wait_until(lambda: "controller started" in controller.log_path.read_text()[logged:], 30,
                   "the controller to start again")
        wait_until(lambda: not _exists(engine, orphan.id), 20, "the orphaned container to be removed")
        assert call(url, {"mark": "after"}, key=key)[0] == 200
        wait_until(lambda: '{"mark": "after"}' in _read(console), 10, "the console to be followed again")
    finally:
        loop.stop()
        with contextlib.suppress(docker_sdk.errors.NotFound):
            orphan.remove(force=True)
    assert not loop.failures(), loop.failures()[:5]
    assert _read(console).count('{"mark": "before"}') == 1, _read(console)  # followed on from where the file ended
    assert engine.containers.get(instance.handle).id == container  # adopted, not started again
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.HEALTHY


def _exists(engine, container_id: str) -> bool:
    try:
        engine.containers.get(container_id)
        return True
    except docker_sdk.errors.NotFound:
        return False


def test_a_killed_instance_is_started_again_and_no_request_fails(
        workspace, alice, gateway, docker_target, studio, engine):  # noqa: F811
    (version,) = echo_versions(workspace, alice, "sturdy")
    endpoint = endpoint_services.create_endpoint(workspace, alice, "sturdy")
    deployment = deploy(endpoint, "blue", version, IDENTITY, docker_target, instance_count=2)
    serving(deployment, gateway, timeout=60)
    victim = deployment.instances.get(index=0)
    before = engine.containers.get(victim.handle).id
    loop = Loop(scoring_url(gateway, endpoint), endpoint_services.keys(endpoint)["primary"])
    loop.start()
    try:
        wait_until(lambda: len(loop.answers) > 20, 10, "the loop to score")
        engine.containers.get(victim.handle).kill()
        wait_until(lambda: _restarted(engine, victim, before), 60, "the killed instance to be ready again")
        wait_state(deployment, DeploymentState.HEALTHY, timeout=30)
        count = len(loop.answers)
        wait_until(lambda: len(loop.answers) > count + 50, 10, "the loop to go on")
    finally:
        loop.stop()
    assert not loop.failures(), loop.failures()[:5]
    assert DeploymentEvent.objects.filter(endpoint=endpoint, text__contains="Instance 0 of revision 1 stopped").exists()
    served = set(RequestRecord.objects.filter(endpoint=endpoint).values_list("instance", flat=True))
    assert {"blue-0", "blue-1"} <= served


def _restarted(engine, victim: Instance, before: str) -> bool:
    instance = Instance.objects.filter(pk=victim.pk).first()
    if instance is None or instance.state != Instance.State.READY:
        return False
    with contextlib.suppress(docker_sdk.errors.NotFound):
        container = engine.containers.get(instance.handle)
        return container.id != before and container.status == "running"
    return False


def test_an_init_that_raises_fails_the_deployment_with_its_traceback_once(
        workspace, alice, gateway, docker_target, studio, engine):  # noqa: F811
    (version,) = echo_versions(workspace, alice, "broken")
    endpoint = endpoint_services.create_endpoint(workspace, alice, "broken")
    deployment = deploy(endpoint, "blue", version, FAILING, docker_target)
    wait_state(deployment, DeploymentState.FAILED, timeout=90)
    assert "RuntimeError: the model file is corrupt: boom-4217" in deployment.reason
    assert "Traceback" in deployment.reason and "loading the model" in deployment.reason
    stops = DeploymentEvent.objects.filter(endpoint=endpoint, text__contains="stopped").count()
    time.sleep(4)  # the controller leaves a failed revision alone
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.FAILED
    assert DeploymentEvent.objects.filter(endpoint=endpoint, text__contains="stopped").count() == stops
    assert not deployment.instances.exists()
    assert not containers(engine, [deployment.pk])
    status, _, body = call(scoring_url(gateway, endpoint), {"x": 1}, key=endpoint_services.keys(endpoint)["primary"])
    assert status == 503 and "no ready instance" in json.loads(body)["message"]


# Deleting -------------------------------------------------------------------------------------------------------------


def test_a_version_in_use_cannot_be_deleted_until_its_deployment_is_gone(
        workspace, alice, gateway, docker_target, studio, engine):  # noqa: F811
    (version,) = echo_versions(workspace, alice, "kept")
    endpoint = endpoint_services.create_endpoint(workspace, alice, "kept")
    deployment = deploy(endpoint, "blue", version, IDENTITY, docker_target)
    serving(deployment, gateway, timeout=60)
    with pytest.raises(registry.RegistryError) as refused:
        registry.delete_version(version, alice)
    assert refused.value.status == 409 and "deployment blue of endpoint kept" in str(refused.value)
    assert containers(engine, [deployment.pk])

    endpoint_services.delete_deployment(deployment, alice)
    wait_until(lambda: not Deployment.objects.filter(pk=deployment.pk).exists(), 30, "the deployment to go")
    assert not containers(engine, [deployment.pk])
    registry.delete_version(version, alice)
    assert not type(version).objects.filter(pk=version.pk).exists()


def test_deleting_the_endpoint_removes_its_containers_and_scoring_answers_404(
        workspace, alice, gateway, docker_target, studio, engine):  # noqa: F811
    (version,) = echo_versions(workspace, alice, "doomed")
    endpoint = endpoint_services.create_endpoint(workspace, alice, "doomed")
    deployment = deploy(endpoint, "blue", version, IDENTITY, docker_target, instance_count=2)
    serving(deployment, gateway, timeout=60)
    url, key = scoring_url(gateway, endpoint), endpoint_services.keys(endpoint)["primary"]
    assert call(url, {"x": 1}, key=key)[0] == 200
    assert len(containers(engine, [deployment.pk])) == 2

    endpoint_services.delete_endpoint(endpoint, alice)
    wait_until(lambda: call(url, {"x": 1}, key=key)[0] == 404, 5, "scoring to answer 404")
    wait_until(lambda: not Endpoint.objects.filter(pk=endpoint.pk).exists(), 30, "the endpoint to go")
    assert not containers(engine, [deployment.pk])
    status, _, body = call(url, {"x": 1}, key=key)
    assert status == 404 and "doomed" in json.loads(body)["message"]
