"""The studio's scoring server: what runs in each instance of a deployment (a container, or a local process).

    python studio_serving.py --port 5001

Standard library only (inference-schema is used when the environment has it), so it runs in any environment's
interpreter. It serves scoring scripts written for Azure Machine Learning unmodified, as its inference server does:

- the entry script (AZUREML_ENTRY_SCRIPT, relative to AML_APP_ROOT) is loaded as the module `entry_module`; `init()`
  runs once, before the instance reports ready; `run()` is always called by keyword;
- an undecorated `run(raw_data)` gets the body as text (strict UTF-8: 400 otherwise); a `run` decorated with
  inference-schema's `@input_schema`/`@output_schema` gets the JSON body's top-level keys as keyword arguments (415
  for another content type, 400 for a body that is not a JSON object or lacks a parameter); `@rawhttp` hands it the
  request object; a parameter named `request_headers` gets the headers (Title-Cased names);
- a return value that is not an `AMLResponse` goes through `json.dumps` (200, application/json; a str comes back
  quoted, None as {}); errors are JSON `{"message": ...}`; an exception in `run` is a 500 whose traceback goes to the
  console only, with `x-ms-run-function-failed: True`;
- `GET /` is liveness ("Healthy"), `GET /ready` readiness (503 until `init()` returned), `GET /swagger.json`
  (`?version=2|3|3.1`) is made from the decorators, or from a swagger*.json in the app root;
- `from azureml.contrib.services.aml_request import AMLRequest, rawhttp`, `...aml_response import AMLResponse` and
  `from azureml.core.model import Model` (for `Model.get_model_path`) work without any azureml package installed.

An `init()` that raises ends the process with exit code 3 after printing its traceback (the studio restarts it a few
times, then marks the deployment Failed with that traceback). At most STUDIO_MAX_CONCURRENT requests are scored at once;
more get 429.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import os
import sys
import threading
import time
import traceback
import types
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

SCRIPT_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."
INTERNAL_FAILED = "An unexpected internal error occurred. Check the logs for more info."


# What Azure's scripts import ------------------------------------------------------------------------------------------

_raw_http_requested = False


def rawhttp(func):
    """Azure's marker: run() receives the request object (a process-wide switch, as in Azure's server)."""
    global _raw_http_requested
    _raw_http_requested = True
    return func


class AMLRequest:
    """The request a @rawhttp run() receives: what scripts use of Flask's request."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes):
        self.method = method
        split = urlsplit(path)
        self.path, self.full_path = split.path, f"{split.path}?{split.query}"
        self.query_string = split.query.encode()
        self.args = _MultiDict(parse_qsl(split.query, keep_blank_values=True))
        self.headers = _Headers(headers)
        self.data = body
        self.content_type = self.headers.get("Content-Type", "")
        self.mimetype = self.content_type.split(";")[0].strip().lower()
        self.is_json = self.mimetype == "application/json" or (
            self.mimetype.startswith("application/") and self.mimetype.endswith("+json"))
        self.content_length = len(body)
        self.form, self.files = _MultiDict([]), _MultiDict([])
        if self.mimetype == "application/x-www-form-urlencoded":
            self.form = _MultiDict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        elif self.mimetype == "multipart/form-data":
            self.form, self.files = _multipart(self.content_type, body)

    def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False):
        return self.data.decode("utf-8", "replace") if as_text else self.data

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True):
        if not (force or self.is_json):
            if silent:
                return None
            raise _HttpError(415, "Did not attempt to load JSON data because the request Content-Type was not "
                                  "'application/json'.")
        try:
            return json.loads(self.data)
        except ValueError:
            if silent:
                return None
            raise _HttpError(400, "The browser (or proxy) sent a request that this server could not "
                                  "understand.") from None

    @property
    def json(self):
        return self.get_json()


class FileStorage:
    """An uploaded file of a multipart request (what Flask's `request.files[...]` gives)."""

    def __init__(self, filename: str, content_type: str, data: bytes):
        import io

        self.filename, self.content_type, self.stream = filename, content_type, io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(size)

    def save(self, destination) -> None:
        with open(destination, "wb") as handle:
            handle.write(self.stream.getvalue())


def _multipart(content_type: str, body: bytes):
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    form, files = [], []
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition") or ""
        filename = part.get_filename()
        data = part.get_payload(decode=True) or b""
        if filename is not None:
            files.append((name, FileStorage(filename, part.get_content_type(), data)))
        else:
            form.append((name, data.decode("utf-8", "replace")))
    return _MultiDict(form), _MultiDict(files)


class _MultiDict(dict):
    def __init__(self, pairs):
        super().__init__()
        self._lists: dict[str, list[str]] = {}
        for key, value in pairs:
            self._lists.setdefault(key, []).append(value)
            self.setdefault(key, value)

    def getlist(self, key):
        return list(self._lists.get(key, []))


class _Headers(dict):
    """Header names Title-Cased (`x-my-header` -> `X-My-Header`), looked up in any case."""

    def __init__(self, headers: dict[str, str]):
        super().__init__({_title(name): value for name, value in headers.items()})

    def get(self, key, default=None):
        return super().get(_title(key), default)

    def __getitem__(self, key):
        return super().__getitem__(_title(key))

    def __contains__(self, key):
        return super().__contains__(_title(key)) if isinstance(key, str) else False


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


class AMLResponse:
    """Azure's response: `AMLResponse(message, status_code, response_headers={}, json_str=False,
    run_function_failed=False)`, with its behaviour (a header value with commas becomes several headers)."""

    def __init__(self, message, status_code, response_headers=None, json_str=False, run_function_failed=False):
        self.status_code = int(status_code)
        response_headers = dict(response_headers or {})
        self.headers: list[tuple[str, str]] = []
        if message is None:
            self.body, content_type = json.dumps({}).encode(), "application/json"
        elif json_str:
            self.body, content_type = json.dumps(message).encode(), "application/json"
        else:
            self.body, content_type = _as_bytes(message), "text/html; charset=utf-8"
            if any(name.lower() == "content-type" for name in response_headers):
                content_type = None
        if content_type:
            self.headers.append(("Content-Type", content_type))
        self.headers.append(("x-ms-run-function-failed", str(bool(run_function_failed))))
        for name, value in response_headers.items():
            for part in str(value).split(","):
                self.headers.append((name, part.strip()))


def _as_bytes(message) -> bytes:
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode()
    return b"".join(part if isinstance(part, bytes) else str(part).encode() for part in message)


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class ModelNotFoundException(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class WebserviceException(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Model:
    """`azureml.core.model.Model.get_model_path` as the v1 SDK resolves it inside a deployment: the single file or
    folder in `$AML_APP_ROOT/azureml-models/<name>/<version>` (the highest version when none is given), else
    `./<name>`."""

    @staticmethod
    def get_model_path(model_name, version=None, _workspace=None):
        if version is not None and not isinstance(version, int):
            raise WebserviceException("version should be an int")
        models_dir = os.path.join(os.environ.get("AML_APP_ROOT", ""), "azureml-models")
        folder = os.path.join(models_dir, model_name)
        try:
            if os.path.isdir(folder):
                if version is None:
                    versions = os.listdir(folder)
                    if not versions:
                        raise WebserviceException("versions is empty")
                    version = max(int(v) for v in versions)
                candidate = os.path.join(folder, str(version))
                if os.path.isdir(candidate):
                    entries = os.listdir(candidate)
                    if len(entries) != 1:
                        raise WebserviceException(
                            f"Dir {candidate} can contain only 1 file or folder. Found {entries}")
                    return os.path.join(candidate, entries[0])
            if os.path.exists(model_name):
                return model_name
            raise ModelNotFoundException(
                f"Model {model_name} not found in cache at {models_dir} or in current working directory "
                f"{os.getcwd()}. For more info, set logging level to DEBUG.")
        except ModelNotFoundException as error:
            if version is not None:
                raise WebserviceException(error.message) from None
            raise


def install_azure_names() -> None:
    """The module names Azure's scripts import, answered by this file unless the real packages are installed."""
    this = sys.modules[__name__]
    request_module = types.ModuleType("azureml.contrib.services.aml_request")
    request_module.AMLRequest, request_module.rawhttp = AMLRequest, rawhttp
    response_module = types.ModuleType("azureml.contrib.services.aml_response")
    response_module.AMLResponse = AMLResponse
    sys.modules["azureml.contrib.services.aml_request"] = request_module
    sys.modules["azureml.contrib.services.aml_response"] = response_module
    try:
        import azureml.core.model  # noqa: F401 - a real SDK is there: leave it
    except ImportError:
        model_module = types.ModuleType("azureml.core.model")
        model_module.Model = Model
        exceptions = types.ModuleType("azureml.exceptions")
        exceptions.ModelNotFoundException, exceptions.WebserviceException = ModelNotFoundException, WebserviceException
        sys.modules["azureml.core.model"] = model_module
        sys.modules["azureml.exceptions"] = exceptions
    this.installed = True


# The scoring script ---------------------------------------------------------------------------------------------------


class Script:
    def __init__(self, app_root: str, entry: str):
        location = os.path.join(app_root, entry)
        spec = importlib.util.spec_from_file_location("entry_module", location)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name in ("init", "run"):
            if not hasattr(module, name):
                raise RuntimeError(f"The scoring script {entry} has no {name}() function.")
        driver = getattr(module, "driver_module", None)
        self.run = driver.run if isinstance(driver, types.ModuleType) and hasattr(driver, "run") else module.run
        self.init = module.init
        parameters = list(inspect.signature(self.run).parameters.values())
        if any(p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters):
            raise RuntimeError("run() cannot accept positional-only arguments, *args, or **kwargs.")
        self.wants_headers = any(p.name == "request_headers" for p in parameters)
        self.parameters = [p for p in parameters if p.name != "request_headers"]
        if not self.parameters:
            raise RuntimeError("run() needs to accept an argument for input data.")
        self.schema_decorated = _schema_decorated(self.run)
        self.raw = _raw_http_requested
        if self.raw and self.schema_decorated:
            raise RuntimeError("run() cannot be decorated with both @rawhttp and @input_schema")

    def arguments(self, method: str, path: str, headers: dict[str, str], body: bytes) -> dict:
        first = self.parameters[0].name
        if self.raw:
            return {first: AMLRequest(method, path, headers, body)}
        query = urlsplit(path).query
        if self.schema_decorated:
            if method == "GET":
                values = _query_values(query)
            else:
                content_type = _Headers(headers).get("Content-Type", "").split(";")[0].strip().lower()
                if content_type != "application/json" and not (
                        content_type.startswith("application/") and content_type.endswith("+json")):
                    raise _HttpError(415, "Expects Content-Type to be application/json")
                try:
                    values = json.loads(body)
                except ValueError as error:
                    raise _HttpError(400, f"POST body could not be decoded as JSON: {error}" if body else
                                     "POST body is empty. Expecting a JSON dictionary.") from None
                if not isinstance(values, dict):
                    raise _HttpError(400, "POST body should be a JSON dictionary.")
            arguments = {}
            for parameter in self.parameters:
                value = values.get(parameter.name, parameter.default)
                if value is inspect.Parameter.empty:
                    raise _HttpError(400, f"A value is not provided for the {parameter.name!r} parameter.")
                arguments[parameter.name] = value
            return arguments
        if method == "GET":
            return {first: json.dumps(_query_values(query))}
        try:
            return {first: body.decode("utf-8")}
        except UnicodeDecodeError as error:
            raise _HttpError(400, f"Input cannot be decoded as UTF-8: {error}") from None

    def call(self, arguments: dict, headers: dict[str, str]):
        if self.wants_headers:
            return self.run(**arguments, request_headers=dict(_Headers(headers)))
        return self.run(**arguments)


def _query_values(query: str) -> dict:
    values: dict = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if key in values:
            values[key] = (values[key] if isinstance(values[key], list) else [values[key]]) + [value]
        else:
            values[key] = value
    return values


def _schema_decorated(run) -> bool:
    try:
        from inference_schema.schema_util import is_schema_decorated
    except ImportError:
        return False
    return bool(is_schema_decorated(run))


def swagger(script: Script | None, app_root: str, version: str) -> dict:
    aliases = {"2": "2", "2.0": "2", "3": "3", "3.0": "3", "3.1": "3.1"}
    if version not in aliases:
        raise _HttpError(404, f"Swagger version [{version}] is not valid. Supported versions: [2, 3, 3.1].")
    wanted = aliases[version]
    for name in {"2": ("swagger.json", "swagger2.json"), "3": ("swagger3.json",), "3.1": ("swagger3.1.json",)}[wanted]:
        path = os.path.join(app_root, name)
        if os.path.isfile(path):
            with open(path) as handle:
                return json.load(handle)
    input_schema = output_schema = {"type": "object", "example": {}}
    if script is not None and script.schema_decorated:
        from inference_schema.schema_util import get_input_schema, get_output_schema, get_supported_versions

        supported = list(get_supported_versions(script.run))
        if {"2": "2.0", "3": "3.0", "3.1": "3.1"}[wanted] not in supported:
            shown = ", ".join(v.removesuffix(".0") for v in supported)
            raise _HttpError(404, f"Swagger version [{version}] is not supported for the scoring script. Supported "
                                  f"swagger versions: [{shown}].")
        input_schema, output_schema = get_input_schema(script.run), get_output_schema(script.run)
    title = os.environ.get("SERVICE_NAME", "ML service")
    info = {"title": title, "description": f"API specification for the Azure Machine Learning service {title}",
            "version": os.environ.get("SERVICE_VERSION", "1.0")}
    error = {"type": "object", "properties": {"message": {"type": "string"}}}
    if wanted == "2":
        return {
            "swagger": "2.0", "info": info, "schemes": ["https"], "consumes": ["application/json"],
            "produces": ["application/json"],
            "securityDefinitions": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header",
                                               "description": "For example: Bearer abc123"}},
            "paths": {
                "/": {"get": {"operationId": "ServiceHealthCheck", "description": "Simple health check endpoint to "
                              "ensure the service is up at any given point.", "responses": {
                                  "200": {"description": "If service is up and running, this response will be "
                                          "returned with the content 'Healthy'", "schema": {"type": "string"},
                                          "examples": {"application/json": "Healthy"}},
                                  "default": {"description": "The service failed to execute due to an error.",
                                              "schema": {"$ref": "#/definitions/ErrorResponse"}}}}},
                "/score": {"post": {"operationId": "RunMLService", "description": "Run web service's model and "
                                    "get the prediction output", "security": [{"Bearer": []}], "parameters": [{
                                        "name": "serviceInputPayload", "in": "body",
                                        "description": "The input payload for executing the real-time machine "
                                                       "learning service.",
                                        "schema": {"$ref": "#/definitions/ServiceInput"}}], "responses": {
                                        "200": {"description": "The service processed the input correctly and "
                                                "provided a result prediction, if applicable.",
                                                "schema": {"$ref": "#/definitions/ServiceOutput"}},
                                        "default": {"description": "The service failed to execute due to an error.",
                                                    "schema": {"$ref": "#/definitions/ErrorResponse"}}}}},
            },
            "definitions": {"ServiceInput": input_schema, "ServiceOutput": output_schema, "ErrorResponse": error},
        }
    document = {
        "openapi": "3.1.0" if wanted == "3.1" else "3.0.3", "info": info, "security": [{"Bearer": []}],
        "paths": {
            "/": {"get": {"operationId": "ServiceHealthCheck", "responses": {"200": {
                "description": "If service is up and running, this response will be returned with the content "
                               "'Healthy'", "content": {"text/plain": {"schema": {"type": "string"},
                                                                       "example": "Healthy"}}}}}},
            "/score": {"post": {"operationId": "RunMLService", "requestBody": {"content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ServiceInput"}}}}, "responses": {
                "200": {"description": "The service processed the input correctly and provided a result prediction, "
                                       "if applicable.", "content": {"application/json": {
                                           "schema": {"$ref": "#/components/schemas/ServiceOutput"}}}},
                "default": {"description": "The service failed to execute due to an error.", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}}}},
        },
        "components": {"securitySchemes": {"Bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": {"ServiceInput": input_schema, "ServiceOutput": output_schema,
                                   "ErrorResponse": error}},
    }
    return document


# The HTTP server ------------------------------------------------------------------------------------------------------


class State:
    script: Script | None = None
    ready = threading.Event()
    slots: threading.BoundedSemaphore
    app_root = "/var/azureml-app"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "studio-serving/1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        return  # the gateway records every request; the console is for the script's own output

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        if status in (204, 304) or 100 <= status < 200:
            body = b""  # these statuses carry no body
        self.send_response(status)
        names = {name.lower() for name, _ in headers}
        for name, value in headers:
            self.send_header(name, value)
        if "content-type" not in names:
            self.send_header("Content-Type", "application/json")
        request_id = self.headers.get("x-ms-request-id") or self.headers.get("x-request-id") or str(uuid.uuid4())
        self.send_header("x-ms-request-id", request_id[:100])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, failed: bool = False) -> None:
        self._send(status, json.dumps({"message": message}).encode(),
                   [("Content-Type", "application/json"), ("x-ms-run-function-failed", str(failed))])

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self):  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path
        if path == "/":
            return self._send(200, b"Healthy", [("Content-Type", "text/html; charset=utf-8")])
        if path == "/ready":
            if State.ready.is_set():
                return self._send(200, b"Ready", [("Content-Type", "text/plain")])
            return self._error(503, "The scoring script is still initialising (init() has not returned).")
        if path == "/swagger.json":
            version = dict(parse_qsl(urlsplit(self.path).query)).get("version", "2")
            try:
                document = swagger(State.script, State.app_root, version)
            except _HttpError as error:
                return self._error(error.status, error.message)
            return self._send(200, json.dumps(document).encode(), [("Content-Type", "application/json")])
        if path == "/score":
            return self._score("GET", b"")
        return self._error(404, "The requested URL was not found on the server.")

    def do_POST(self):  # noqa: N802
        body = self._body()
        if urlsplit(self.path).path != "/score":
            return self._error(404 if urlsplit(self.path).path not in ("/", "/swagger.json", "/ready") else 405,
                               "The method is not allowed for the requested URL.")
        return self._score("POST", body)

    def _score(self, method: str, body: bytes) -> None:
        if not State.ready.is_set():
            return self._error(503, "The scoring script is still initialising (init() has not returned).")
        if not State.slots.acquire(blocking=False):
            return self._error(429, "This instance is scoring as many requests as it may at once: try again.")
        try:
            headers = {name: value for name, value in self.headers.items()}
            try:
                arguments = State.script.arguments(method, self.path, headers, body)
            except _HttpError as error:
                return self._error(error.status, error.message)
            started = time.perf_counter()
            try:
                result = State.script.call(arguments, headers)
            except _HttpError as error:  # a rawhttp script asked for JSON it was not sent
                return self._error(error.status, error.message)
            except Exception:
                traceback.print_exc()
                sys.stderr.flush()
                return self._error(500, SCRIPT_FAILED, failed=True)
            elapsed = f"{(time.perf_counter() - started) * 1000:.3f}"
            if isinstance(result, AMLResponse):
                response_headers = list(result.headers)
                if result.status_code >= 500:
                    response_headers = [(n, v) for n, v in response_headers if n != "x-ms-run-function-failed"]
                    response_headers.append(("x-ms-run-function-failed", "True"))
                return self._send(result.status_code, result.body,
                                  response_headers + [("x-ms-run-fn-exec-ms", elapsed)])
            try:
                payload = json.dumps(result if result is not None else {}).encode()
            except (TypeError, ValueError):
                traceback.print_exc()
                return self._error(500, INTERNAL_FAILED)
            return self._send(200, payload, [("Content-Type", "application/json"),
                                             ("x-ms-run-function-failed", "False"), ("x-ms-run-fn-exec-ms", elapsed)])
        finally:
            State.slots.release()

    def do_PUT(self):  # noqa: N802
        self._body()
        self._error(405, "The method is not allowed for the requested URL.")

    do_DELETE = do_PATCH = do_PUT


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    State.app_root = os.environ.get("AML_APP_ROOT", "/var/azureml-app")
    State.slots = threading.BoundedSemaphore(int(os.environ.get("STUDIO_MAX_CONCURRENT", "4")))
    os.chdir(State.app_root)
    sys.path.append(State.app_root)
    install_azure_names()
    server = Server((args.host, args.port), Handler)  # liveness answers while init() runs
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    entry = os.environ.get("AZUREML_ENTRY_SCRIPT", "score.py")
    print(f"studio-serving: loading {entry} and running init()", flush=True)
    started = time.perf_counter()
    try:
        State.script = Script(State.app_root, entry)
        State.script.init()
    except BaseException:
        traceback.print_exc()
        print("studio-serving: init() failed: the instance stops.", file=sys.stderr, flush=True)
        server.shutdown()
        return 3
    State.ready.set()
    print(f"studio-serving: init() returned in {time.perf_counter() - started:.2f} s; ready on port {args.port}",
          flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
