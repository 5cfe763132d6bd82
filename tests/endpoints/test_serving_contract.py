"""The studio's scoring server (`endpoints/serving/studio_serving.py`) keeps Azure Machine Learning's contract for
scoring scripts: each test starts it as a real process on a scoring script and model files written into tmp_path, and
asserts what a client (or the operator reading the console) sees.

The contract is azureml-inference-server-http's (`azmlinfsrv`): init() once, run() by keyword, the JSON body's keys as
arguments of an inference-schema decorated run(), the request object for @rawhttp, AMLResponse for status and
headers, errors as JSON {"message": ...}, tracebacks on the console only, exit code 3 when init() fails.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "endpoints" / "serving" / "studio_serving.py"
MLFLOW_SCORE = ROOT / "endpoints" / "serving" / "studio_mlflow_score.py"
DIGITS = ROOT / "examples" / "digits"
SCRIPT_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."


# The server as a process ----------------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        assert self.headers.get("Content-Type", "").startswith("application/json"), self.headers.get("Content-Type")
        return json.loads(self.body)


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    app_root: Path
    stdout_path: Path
    stderr_path: Path

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None,
                timeout: float = 20) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body.encode() if isinstance(body, str) else body,
                               headers=headers or {})
            response = connection.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            connection.close()

    def get(self, path: str, **kwargs) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str = "/score", body=None, content_type: str | None = "application/json",
             headers: dict | None = None, **kwargs) -> Response:
        if not isinstance(body, (bytes, str, type(None))):
            body = json.dumps(body)
        headers = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
        return self.request("POST", path, body=body, headers=headers, **kwargs)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_until(self, path: str, status: int = 200, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode} before {path} answered "
                                     f"{status}:\n{self.stderr}")
            try:
                if self.get(path, timeout=2).status == status:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{path} did not answer {status} within {timeout} s:\n{self.stderr}")

    def exit_code(self, timeout: float = 20) -> int:
        return self.process.wait(timeout=timeout)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Launcher:
    """start(script, models=..., wait="ready"|"live"|None, ...): the server on `script` in an app root of its own.

    models maps paths under the app root (`azureml-models/<name>/<version>/...`) to bytes; model_dir is
    AZUREML_MODEL_DIR relative to the app root (default: the one version's folder, as the studio sets it for one
    model, or azureml-models for several)."""

    def __init__(self, base: Path):
        self.base = base
        self.started: list[Server] = []

    def __call__(self, script: str, models: dict[str, bytes] | None = None, model_dir: str | None = None,
                 wait: str | None = "ready", env: dict | None = None, python: str = sys.executable,
                 files: dict[str, bytes | str] | None = None) -> Server:
        app_root = self.base / f"app-{len(self.started)}"
        app_root.mkdir()
        (app_root / "score.py").write_text(textwrap.dedent(script))
        for relative, content in {**(models or {}), **(files or {})}.items():
            target = app_root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode() if isinstance(content, str) else content)
        if model_dir is None:
            versions = sorted({"/".join(Path(p).parts[:3]) for p in (models or {}) if p.startswith("azureml-models/")})
            model_dir = versions[0] if len(versions) == 1 else "azureml-models"
        port = _free_port()
        stdout, stderr = self.base / f"{app_root.name}.out", self.base / f"{app_root.name}.err"
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.base), "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "AML_APP_ROOT": str(app_root),
            "AZUREML_ENTRY_SCRIPT": "score.py", "AZUREML_MODEL_DIR": str(app_root / model_dir),
            "STUDIO_MAX_CONCURRENT": "4", **(env or {}),
        }
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            process = subprocess.Popen([python, str(SERVER), "--host", "127.0.0.1", "--port", str(port)],
                                       cwd=self.base, env=environment, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=err)
        server = Server(process, port, app_root, stdout, stderr)
        self.started.append(server)
        if wait == "ready":
            server.wait_until("/ready")
        elif wait == "live":
            server.wait_until("/")
        return server

    def stop(self) -> None:
        for server in self.started:
            if server.process.poll() is None:
                server.process.kill()
            server.process.wait(timeout=10)


@pytest.fixture
def serve(tmp_path):
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.stop()


@pytest.fixture(scope="module")
def serve_shared(tmp_path_factory):
    """The same, for servers that several tests ask without changing them."""
    launcher = Launcher(tmp_path_factory.mktemp("shared"))
    yield launcher
    launcher.stop()


# Scripts as users write them ------------------------------------------------------------------------------------------

UNDECORATED = """
import json
import os

model = None
inits = 0


def init():
    global model, inits
    inits += 1
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.json")) as handle:
        model = json.load(handle)
    print("init: loaded the model", flush=True)


def run(raw_data):
    if raw_data == "none":
        return None
    if raw_data == "text":
        return "just a string"
    data = json.loads(raw_data)
    return {"received": type(raw_data).__name__, "inits": inits,
            "scaled": [value * model["factor"] for value in data["data"]]}
"""


def test_undecorated_run_gets_the_body_as_text_and_the_model_from_azureml_model_dir(serve):
    server = serve(UNDECORATED, models={"azureml-models/scaler/1/model.json": b'{"factor": 3}'})

    first = server.post(body={"data": [1, 2.5]})
    again = server.post(body={"data": [4]})

    assert first.status == 200
    assert first.json() == {"received": "str", "inits": 1, "scaled": [3, 7.5]}
    assert first.headers["x-ms-run-function-failed"] == "False"
    assert again.json() == {"received": "str", "inits": 1, "scaled": [12]}  # init() ran once, not per request
    assert server.stdout.count("init: loaded the model") == 1


def test_undecorated_run_return_values_and_get_with_query_args(serve):
    server = serve(UNDECORATED, models={"azureml-models/scaler/1/model.json": b'{"factor": 2}'})

    by_get = server.get("/score?data=%5B1%2C2%5D")  # the query's values as the JSON body: {"data": [1, 2]}
    as_text = server.post(body="text", content_type="text/plain")
    nothing = server.post(body="none", content_type="text/plain")
    not_utf8 = server.post(body=b"\xff\xfe{", content_type="application/octet-stream")

    assert (by_get.status, by_get.json()["scaled"]) == (200, [2, 4])
    assert (as_text.status, as_text.json()) == (200, "just a string")
    assert (nothing.status, nothing.json()) == (200, {})
    assert not_utf8.status == 400
    assert "UTF-8" in not_utf8.json()["message"]


def test_liveness_readiness_and_unknown_routes(serve):
    script = """
    import os
    import time


    def init():
        while not os.path.exists(os.path.join(os.environ["AML_APP_ROOT"], "go")):
            time.sleep(0.02)


    def run(raw_data):
        return "scored"
    """
    server = serve(script, wait="live")

    live = server.get("/")
    waiting, early = server.get("/ready"), server.post(body="{}")
    (server.app_root / "go").touch()
    server.wait_until("/ready")

    assert (live.status, live.body) == (200, b"Healthy")
    assert waiting.status == 503 and waiting.json()["message"]
    assert early.status == 503 and early.json()["message"]
    assert server.get("/ready").status == 200
    assert server.post(body="{}").json() == "scored"
    missing = server.get("/nowhere")
    assert missing.status == 404 and missing.json()["message"]
    wrong_method = server.request("PUT", "/score", body=b"{}")
    assert wrong_method.status == 405 and wrong_method.json()["message"]


# inference-schema ------------------------------------------------------------------------------------------------------

DECORATED = """
import numpy as np
import pandas as pd
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("matrix", NumpyParameterType(np.array([[1.0, 2.0], [3.0, 4.0]])))
@input_schema("frame", PandasParameterType(pd.DataFrame({"height": [1.5, 1.8], "name": ["ann", "bo"]})))
@input_schema("options", StandardPythonParameterType({"scale": 2, "label": "x"}))
@output_schema(StandardPythonParameterType({"row_sums": [6.0, 14.0], "mean_height": 1.65, "names": ["ann", "bo"]}))
def run(matrix, frame, options={"scale": 1, "label": "default"}):
    return {
        "types": [type(matrix).__name__, str(matrix.dtype), type(frame).__name__, type(options).__name__],
        "row_sums": (matrix.sum(axis=1) * options["scale"]).tolist(),
        "mean_height": float(frame["height"].mean()),
        "names": frame["name"].tolist(),
        "label": options["label"],
    }
"""

DECORATED_BODY = {"matrix": [[1, 2], [3, 4], [5, 6]], "frame": [{"height": 1.0, "name": "cy"}, {"height": 2.0,
                                                                                                  "name": "di"}],
                  "options": {"scale": 10, "label": "given"}}


@pytest.fixture(scope="module")
def decorated(serve_shared):
    return serve_shared(DECORATED)


def test_decorated_run_gets_the_body_keys_converted_by_the_declared_types(decorated):
    response = decorated.post(body=DECORATED_BODY)
    assert response.status == 200, response.body
    assert response.json() == {"types": ["ndarray", "float64", "DataFrame", "dict"], "row_sums": [30.0, 70.0, 110.0],
                               "mean_height": 1.5, "names": ["cy", "di"], "label": "given"}

    defaulted = decorated.post(body={key: DECORATED_BODY[key] for key in ("matrix", "frame")})
    assert defaulted.json()["label"] == "default"  # a parameter with a default may be left out
    with_charset = decorated.post(body=DECORATED_BODY, content_type="application/json; charset=utf-8")
    assert with_charset.status == 200
    # GET: each query value parsed as JSON, as the body's keys
    by_get = decorated.get("/score?" + urlencode({key: json.dumps(value) for key, value in DECORATED_BODY.items()}))
    assert by_get.status == 200 and by_get.json()["row_sums"] == [30.0, 70.0, 110.0]


@pytest.mark.parametrize(("body", "content_type", "status", "words"), [
    (json.dumps(DECORATED_BODY), "text/plain", 415, "application/json"),
    (json.dumps(DECORATED_BODY), None, 415, "application/json"),
    (json.dumps({"frame": DECORATED_BODY["frame"]}), "application/json", 400, "'matrix'"),
    ("[1, 2, 3]", "application/json", 400, "dictionary"),
    ('{"matrix": [[1, 2]', "application/json", 400, "JSON"),
    ("", "application/json", 400, "empty"),
])
def test_decorated_run_refuses_a_body_it_cannot_call_run_with(decorated, body, content_type, status, words):
    response = decorated.post(body=body, content_type=content_type)
    assert response.status == status
    assert words in response.json()["message"]
    assert "Traceback" not in response.body.decode()


def test_a_value_that_does_not_convert_is_a_400_but_a_failing_run_is_a_500(decorated):
    wrong_shape = decorated.post(body={**DECORATED_BODY, "matrix": [[1, 2, 3]]})
    not_an_array = decorated.post(body={**DECORATED_BODY, "matrix": "numbers"})
    failing = decorated.post(body={**DECORATED_BODY, "options": {"scale": None, "label": "x"}})

    assert wrong_shape.status == 400 and "dimension #1" in wrong_shape.json()["message"]
    assert not_an_array.status == 400 and "array" in not_an_array.json()["message"]
    assert failing.status == 500 and failing.json() == {"message": SCRIPT_FAILED}  # inside run(): the script's fault
    assert failing.headers["x-ms-run-function-failed"] == "True"


def _valid_openapi(document: dict) -> None:
    from openapi_spec_validator import OpenAPIV2SpecValidator, OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

    validator = {"2.0": OpenAPIV2SpecValidator, "3.0.3": OpenAPIV30SpecValidator, "3.1.0": OpenAPIV31SpecValidator}[
        document.get("swagger") or document.get("openapi")]
    errors = [error.message for error in validator(document).iter_errors()]
    assert not errors, errors


def test_swagger_is_made_from_the_decorators_in_azures_format(decorated):
    v2 = decorated.get("/swagger.json")
    assert v2.status == 200
    document = v2.json()
    assert document["swagger"] == "2.0"
    assert set(document["paths"]) == {"/", "/score", "/swagger.json"}
    assert document["paths"]["/score"]["post"]["parameters"][0]["schema"] == {"$ref": "#/definitions/ServiceInput"}
    service_input, service_output = document["definitions"]["ServiceInput"], document["definitions"]["ServiceOutput"]
    assert service_input["type"] == "object"
    assert service_input["example"] == {"matrix": [[1.0, 2.0], [3.0, 4.0]],
                                        "frame": [{"height": 1.5, "name": "ann"}, {"height": 1.8, "name": "bo"}],
                                        "options": {"scale": 2, "label": "x"}}
    assert service_input["properties"]["matrix"]["format"] == "numpy.ndarray"
    assert service_input["properties"]["frame"]["format"] == "pandas.DataFrame:records"
    assert service_output["example"] == {"row_sums": [6.0, 14.0], "mean_height": 1.65, "names": ["ann", "bo"]}
    assert document["definitions"]["ErrorResponse"]["properties"] == {"message": {"type": "string"}}
    _valid_openapi(document)
    # the example is a body the service accepts
    assert decorated.post(body=service_input["example"]).json()["row_sums"] == [6.0, 14.0]

    for version, openapi in (("3", "3.0.3"), ("3.1", "3.1.0")):
        v3 = decorated.get(f"/swagger.json?version={version}").json()
        assert v3["openapi"] == openapi
        assert v3["components"]["schemas"]["ServiceInput"]["example"] == service_input["example"]
        assert v3["components"]["schemas"]["ServiceOutput"]["example"] == service_output["example"]
        _valid_openapi(v3)
    unknown = decorated.get("/swagger.json?version=4")
    assert unknown.status == 404 and "version" in unknown.json()["message"]


def test_swagger_of_an_undecorated_script_and_one_the_app_ships(serve):
    plain = serve(UNDECORATED, models={"azureml-models/scaler/1/model.json": b'{"factor": 1}'})
    document = plain.get("/swagger.json").json()
    assert document["definitions"]["ServiceInput"] == {"type": "object", "example": {}}
    _valid_openapi(document)

    shipped = {"swagger": "2.0", "info": {"title": "mine", "version": "7"}, "paths": {}}
    own = serve(UNDECORATED, models={"azureml-models/scaler/1/model.json": b'{"factor": 1}'},
                files={"swagger.json": json.dumps(shipped)})
    assert own.get("/swagger.json").json() == shipped


def test_inference_schema_is_only_imported_by_scripts_that_use_it(serve):
    script = """
    import sys


    def init():
        pass


    def run(raw_data):
        return {"loaded": sorted(name for name in ("inference_schema", "numpy", "pandas") if name in sys.modules)}
    """
    assert serve(script).post(body="{}").json() == {"loaded": []}


# @rawhttp ---------------------------------------------------------------------------------------------------------------

RAW = """
import hashlib

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    case = request.args.get("case", "")
    if request.method == "GET":
        return AMLResponse({"method": "GET", "q": request.args.get("q"), "tags": request.args.getlist("tag"),
                            "header": request.headers.get("x-custom-header")}, 200, json_str=True)
    if case == "bytes":
        data = request.get_data()
        return AMLResponse(data[::-1], 201, {"Content-Type": "application/octet-stream", "X-Model-Version": "7"})
    if case == "json":
        return {"got": request.get_json(), "is_json": request.is_json}
    if case == "form":
        upload = request.files["image"]
        content = upload.read()
        return {"name": request.form["name"], "tags": request.form.getlist("tag"), "filename": upload.filename,
                "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    if case == "urlencoded":
        return {"form": dict(request.form)}
    if case == "busy":
        return AMLResponse("the model is warming up", 503)
    if case == "empty":
        return AMLResponse(None, 204)
    return AMLResponse("unknown case", 400)
"""


@pytest.fixture(scope="module")
def raw(serve_shared):
    return serve_shared(RAW)


def test_rawhttp_get_with_query_args_and_headers(raw):
    response = raw.get("/score?q=cats&tag=a&tag=b", headers={"X-Custom-Header": "v1"})
    assert response.status == 200
    assert response.json() == {"method": "GET", "q": "cats", "tags": ["a", "b"], "header": "v1"}


def test_rawhttp_amlresponse_sets_status_headers_and_body(raw):
    payload = bytes(range(256)) + b"\r\n\x00tail"
    response = raw.post("/score?case=bytes", body=payload, content_type="image/png")
    assert response.status == 201
    assert response.body == payload[::-1]
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["X-Model-Version"] == "7"

    busy = raw.post("/score?case=busy", body=b"")
    assert (busy.status, busy.body) == (503, b"the model is warming up")
    assert busy.headers["x-ms-run-function-failed"] == "True"  # a 5xx answer of run() counts as a failure
    assert raw.post("/score?case=nothing", body=b"").status == 400
    assert raw.post("/score?case=empty", body=b"").status == 204


def test_rawhttp_json_and_plain_return_values(raw):
    response = raw.post("/score?case=json", body={"x": [1, 2]})
    assert response.status == 200
    assert response.json() == {"got": {"x": [1, 2]}, "is_json": True}


def test_rawhttp_multipart_form_and_file_upload(raw):
    image = bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n\x00"
    boundary = uuid.uuid4().hex
    parts = [
        (b'Content-Disposition: form-data; name="name"', "dígito siete".encode()),
        (b'Content-Disposition: form-data; name="tag"', b"one"),
        (b'Content-Disposition: form-data; name="tag"', b"two"),
        ('Content-Disposition: form-data; name="image"; filename="siete ñ.png"\r\nContent-Type: image/png'.encode(),
         image),
    ]
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n" for head, data in parts)
    body += b"--" + boundary.encode() + b"--\r\n"

    response = raw.post("/score?case=form", body=body, content_type=f"multipart/form-data; boundary={boundary}")

    assert response.status == 200, response.body
    assert response.json() == {"name": "dígito siete", "tags": ["one", "two"], "filename": "siete ñ.png",
                               "size": len(image), "sha256": hashlib.sha256(image).hexdigest()}

    form = raw.post("/score?case=urlencoded", body="a=1&b=two+words", content_type="application/x-www-form-urlencoded")
    assert form.json() == {"form": {"a": "1", "b": "two words"}}


def test_request_headers_parameter_gets_the_headers(serve):
    script = """
    def init():
        pass


    def run(raw_data, request_headers):
        return {"custom": request_headers.get("X-Custom-Header"), "body": raw_data}
    """
    response = serve(script).post(body='{"a": 1}', headers={"x-custom-header": "hello"})
    assert response.json() == {"custom": "hello", "body": '{"a": 1}'}


def test_request_headers_with_a_decorated_run(serve):
    script = """
    from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
    from inference_schema.schema_decorators import input_schema


    def init():
        pass


    @input_schema("text", StandardPythonParameterType("hi"))
    def run(text, request_headers):
        return {"text": text, "custom": request_headers.get("X-Custom-Header")}
    """
    response = serve(script).post(body={"text": "yo"}, headers={"X-Custom-Header": "h"})
    assert response.json() == {"text": "yo", "custom": "h"}


# Model.get_model_path (SDK v1 scripts) --------------------------------------------------------------------------------

GET_MODEL_PATH = """
import os

from azureml.core import Model as TopLevelModel
from azureml.core.model import Model

paths = {}


def init():
    paths["first"] = Model.get_model_path("first")
    assert TopLevelModel is Model


def run(raw_data):
    import json

    asked = json.loads(raw_data)
    try:
        path = Model.get_model_path(asked["name"], version=asked.get("version")) if asked.get("name") else paths["first"]
    except Exception as error:
        return {"error": type(error).__name__}
    root = os.environ["AML_APP_ROOT"]
    content = open(path).read() if os.path.isfile(path) else sorted(os.listdir(path))
    return {"path": os.path.relpath(path, root), "content": content}
"""


def test_get_model_path_with_one_model(serve):
    server = serve(GET_MODEL_PATH, models={"azureml-models/first/3/weights.txt": b"w1"})
    assert server.post(body="{}").json() == {"path": "azureml-models/first/3/weights.txt", "content": "w1"}
    assert server.post(body={"name": "missing"}).json() == {"error": "ModelNotFoundException"}


def test_get_model_path_with_several_models(serve):
    server = serve(GET_MODEL_PATH, models={
        "azureml-models/first/1/weights.txt": b"w1",
        "azureml-models/second/1/folder/a.bin": b"old",
        "azureml-models/second/2/folder/a.bin": b"a",
        "azureml-models/second/2/folder/b.bin": b"b",
    })
    assert server.post(body="{}").json() == {"path": "azureml-models/first/1/weights.txt", "content": "w1"}
    assert server.post(body={"name": "second"}).json() == {  # the highest version when none is given
        "path": "azureml-models/second/2/folder", "content": ["a.bin", "b.bin"]}
    assert server.post(body={"name": "second", "version": 1}).json() == {
        "path": "azureml-models/second/1/folder", "content": ["a.bin"]}
    assert server.post(body={"name": "second", "version": 9}).json() == {"error": "WebserviceException"}


# Failures ---------------------------------------------------------------------------------------------------------------


def test_run_raising_is_a_500_whose_traceback_stays_on_the_console(serve):
    script = """
    def init():
        pass


    def run(raw_data):
        if raw_data == "fail":
            raise RuntimeError("secret detail 8d1f in the model")
        return "fine"
    """
    server = serve(script)

    response = server.post(body="fail", content_type="text/plain")

    assert response.status == 500
    assert response.json() == {"message": SCRIPT_FAILED}
    assert response.headers["x-ms-run-function-failed"] == "True"
    assert "8d1f" not in response.body.decode() and "Traceback" not in response.body.decode()
    deadline = time.monotonic() + 5
    while "8d1f" not in server.stderr and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Traceback (most recent call last)" in server.stderr
    assert "RuntimeError: secret detail 8d1f in the model" in server.stderr
    assert server.post(body="ok", content_type="text/plain").json() == "fine"  # the process serves on


def test_an_unserializable_return_value_is_a_500_too(serve):
    script = """
    def init():
        pass


    def run(raw_data):
        return {"value": object()}
    """
    response = serve(script).post(body="{}")
    assert response.status == 500 and response.json()["message"]


@pytest.mark.parametrize(("script", "expected"), [
    ("def init():\n    raise ValueError('cannot load weights 5c2e')\n\ndef run(raw_data):\n    return 1\n",
     "ValueError: cannot load weights 5c2e"),
    ("import not_a_module_7f3a\n\ndef init():\n    pass\n\ndef run(raw_data):\n    return 1\n",
     "ModuleNotFoundError: No module named 'not_a_module_7f3a'"),
    ("def init():\n    pass\n", "run()"),
    ("def init():\n    pass\n\ndef run(*args):\n    return 1\n", "run()"),
])
def test_a_script_that_cannot_start_ends_the_process_with_code_3(serve, script, expected):
    server = serve(script, wait=None)
    assert server.exit_code() == 3
    assert expected in server.stderr
    if "Error:" in expected:
        assert "Traceback (most recent call last)" in server.stderr


def test_requests_beyond_the_concurrency_limit_get_429(serve):
    script = """
    import os
    import time
    import uuid

    ROOT = os.environ["AML_APP_ROOT"]


    def init():
        os.makedirs(os.path.join(ROOT, "inflight"))


    def run(raw_data):
        open(os.path.join(ROOT, "inflight", uuid.uuid4().hex), "w").close()
        deadline = time.monotonic() + 15
        while not os.path.exists(os.path.join(ROOT, "release")) and time.monotonic() < deadline:
            time.sleep(0.01)
        return "done"
    """
    server = serve(script, env={"STUDIO_MAX_CONCURRENT": "2"})
    inflight = server.app_root / "inflight"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(server.post, body="{}") for _ in range(2)]
        deadline = time.monotonic() + 10
        while len(list(inflight.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(list(inflight.iterdir())) == 2

        refused = server.post(body="{}")
        live = server.get("/")
        (server.app_root / "release").touch()
        answers = [future.result(timeout=20) for future in slow]

    assert refused.status == 429 and refused.json()["message"]
    assert live.status == 200  # liveness is never refused
    assert [(answer.status, answer.json()) for answer in answers] == [(200, "done"), (200, "done")]
    assert len(list(inflight.iterdir())) == 2  # the refused request never reached run()
    assert server.post(body="{}").status == 200  # the slots were given back


def test_a_chunked_request_body_is_read(serve):
    server = serve(UNDECORATED, models={"azureml-models/scaler/1/model.json": b'{"factor": 2}'})
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("POST", "/score", body=iter([b'{"data": ', b"[1, 2]}"]),
                           headers={"Content-Type": "application/json"}, encode_chunked=True)
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["scaled"]) == (200, [2, 4])
        connection.request("GET", "/")  # the connection is still usable: the whole body was read
        assert connection.getresponse().read() == b"Healthy"
    finally:
        connection.close()


def test_a_bad_content_length_is_a_400(serve):
    server = serve(UNDECORATED, models={"azureml-models/scaler/1/model.json": b'{"factor": 2}'})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n")
        answer = client.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400")


# The digits example ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> bytes:
    """outputs/model.pkl as examples/digits/train.py writes it (one epoch, run as a user runs it outside the studio)."""
    work = tmp_path_factory.mktemp("digits-train")
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "sdk"), "MPLBACKEND": "Agg"}
    for name in [name for name in environment if name.startswith("STUDIO_")]:
        environment.pop(name)
    done = subprocess.run([sys.executable, str(DIGITS / "train.py"), "--epochs", "1"], cwd=work, env=environment,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return (work / "outputs" / "model.pkl").read_bytes()


def test_digits_example_scores_its_sample(serve, digits_model):
    """The model registered as train.py's outputs folder (AZUREML_MODEL_DIR/outputs/model.pkl)."""
    sample = json.loads((DIGITS / "sample.json").read_text())
    server = serve((DIGITS / "score.py").read_text(), models={"azureml-models/digits/4/outputs/model.pkl": digits_model})

    response = server.post(body=sample)

    assert response.status == 200, response.body
    answer = response.json()
    import numpy as np

    model = pickle.loads(digits_model)
    expected = model.predict(np.asarray(sample["data"], dtype=float) / 16.0).tolist()
    assert answer["predictions"] == expected
    assert len(answer["probabilities"]) == 2 and all(len(p) == 10 for p in answer["probabilities"])
    assert all(abs(sum(p) - 1) < 1e-4 for p in answer["probabilities"])
    assert [max(range(10), key=p.__getitem__) for p in answer["probabilities"]] == expected

    document = server.get("/swagger.json").json()
    example = document["definitions"]["ServiceInput"]["example"]
    assert example == sample  # the swagger's example is the sample request
    assert set(document["definitions"]["ServiceOutput"]["example"]) == {"predictions", "probabilities"}
    _valid_openapi(document)

    for wrong in ({"data": [[0.0] * 10]}, {"data": [0.0] * 64}, {"data": "pixels"}):
        refused = server.post(body=wrong)
        assert refused.status == 400, (wrong, refused.body)
        assert "array" in refused.json()["message"]


def test_digits_example_finds_a_model_registered_as_the_file(tmp_path, monkeypatch, digits_model):
    """The model registered as the file itself (AZUREML_MODEL_DIR/model.pkl): init() and run() in this process."""
    import importlib.util

    (tmp_path / "model.pkl").write_bytes(digits_model)
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path))
    spec = importlib.util.spec_from_file_location("digits_score", DIGITS / "score.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    script.init()
    answer = script.run(data=json.loads((DIGITS / "sample.json").read_text())["data"])

    assert len(answer["predictions"]) == 2 and all(0 <= p <= 9 for p in answer["predictions"])


def test_digits_sample_holds_real_digits():
    from sklearn.datasets import load_digits

    sample = json.loads((DIGITS / "sample.json").read_text())
    digits = load_digits().data.tolist()
    assert len(sample["data"]) == 2
    assert all(row in digits for row in sample["data"])


# MLflow models deployed without a scoring script ----------------------------------------------------------------------


def _python_with_mlflow() -> str | None:
    candidates = [sys.executable, os.environ.get("STUDIO_TEST_MLFLOW_PYTHON", ""),
                  str(ROOT / "bench" / ".mlflow-serve-venv" / "bin" / "python")]
    for python in dict.fromkeys(filter(None, candidates)):
        if shutil.which(python) and subprocess.run([python, "-c", "import mlflow.pyfunc, pandas"],
                                                   capture_output=True, timeout=60).returncode == 0:
            return python
    return None


SAVE_PYFUNC = """
import sys

import mlflow.pyfunc
import numpy as np
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema


class RowSums(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return np.asarray(model_input, dtype=float).sum(axis=1) * 2


signature = ModelSignature(inputs=Schema([ColSpec("double", "a"), ColSpec("double", "b")]))
mlflow.pyfunc.save_model(sys.argv[1], python_model=RowSums(), signature=signature)
"""


def test_mlflow_pyfunc_model_folder_is_served_without_a_scoring_script(serve, tmp_path):
    python = _python_with_mlflow()
    if python is None:
        pytest.skip("mlflow is not importable in the test interpreter (nor STUDIO_TEST_MLFLOW_PYTHON, nor "
                    "bench/.mlflow-serve-venv): the MLflow scoring script cannot be run")
    folder = tmp_path / "saved"
    saved = subprocess.run([python, "-c", SAVE_PYFUNC, str(folder)], capture_output=True, text=True, timeout=180)
    assert saved.returncode == 0, saved.stderr
    models = {f"azureml-models/rowsums/2/model/{path.relative_to(folder)}": path.read_bytes()
              for path in folder.rglob("*") if path.is_file()}
    server = serve(MLFLOW_SCORE.read_text(), models=models, python=python)

    split = server.post(body={"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0], [3.0, 4.0]]}})
    records = server.post(body={"dataframe_records": [{"a": 1.0, "b": 1.0}]})
    inputs = server.post(body={"inputs": {"a": [1.0], "b": [1.5]}})
    wrong_columns = server.post(body={"dataframe_records": [{"z": 1.0}]})
    unknown = server.post(body={"rows": [[1]]})
    not_json = server.post(body="nope", content_type="text/plain")

    assert (split.status, split.json()) == (200, {"predictions": [6.0, 14.0]})
    assert records.json() == {"predictions": [4.0]}
    assert inputs.json() == {"predictions": [5.0]}
    assert wrong_columns.status == 400 and "missing inputs" in wrong_columns.json()["message"]
    assert unknown.status == 400 and "dataframe_split" in unknown.json()["message"]
    assert not_json.status == 400 and not_json.json()["message"]
    assert "Traceback" not in server.stderr  # none of these is the model's failure
