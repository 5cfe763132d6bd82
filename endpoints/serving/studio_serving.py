"""The studio's scoring server: what runs in each instance of a deployment (a container, or a local process).

    python studio_serving.py --port 5001

Standard library only (inference-schema is used when the environment has it), so it runs in any environment's
interpreter. It serves scoring scripts written for Azure Machine Learning unmodified, as its inference server does:

- the entry script (AZUREML_ENTRY_SCRIPT, relative to AML_APP_ROOT) is loaded as the module `entry_module`; `init()`
  runs once, before the instance reports ready; `run()` is always called by keyword;
- an undecorated `run(raw_data)` gets the body as text (strict UTF-8: 400 otherwise); a `run` decorated with
  inference-schema's `@input_schema`/`@output_schema` gets the JSON body's top-level keys as keyword arguments (415
  for another content type, 400 for a body that is not a JSON object or lacks a parameter), converted by the declared
  types (a value that does not convert is a 400 with inference-schema's reason: Azure's server answers 500 there);
  `@rawhttp` hands it the request object; a parameter named `request_headers` gets the headers (Title-Cased names);
  GET /score passes the query's values as the body's;
- a return value that is not an `AMLResponse` goes through `json.dumps` (200, application/json; a str comes back
  quoted, None as {}); errors are JSON `{"message": ...}`; an exception in `run` is a 500 whose traceback goes to the
  console only, with `x-ms-run-function-failed: True`;
- `GET /` is liveness ("Healthy"), `GET /ready` readiness (503 until `init()` returned), `GET /swagger.json`
  (`?version=2|3|3.1`) is Azure's document around the decorators' schemas, or a swagger*.json of the app root;
- `from azureml.contrib.services.aml_request import AMLRequest, rawhttp`, `...aml_response import AMLResponse` (also
  as `azureml_inference_server_http.api.*`) and `from azureml.core.model import Model` or `from azureml.core import
  Model` (for `Model.get_model_path`) work without any azureml package installed; inference-schema is imported only
  by scripts that use it;
- responses carry Azure's request ids (x-request-id, x-ms-request-id, x-ms-client-request-id); a body is read by
  Content-Length or chunked (a malformed one is a 400).

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
        self.host = self.headers.get("Host", "")
        self.url = f"http://{self.host}{self.path}" + (f"?{split.query}" if split.query else "")
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


def _module(name: str, **attributes) -> types.ModuleType:
    """A module answered by this file under `name`, with its parent packages where they are not importable (so that
    `import a.b.c` works as well as `from a.b.c import X`), each parent holding its child as an attribute."""
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    child = module
    while "." in child.__name__:
        parent_name, _, leaf = child.__name__.rpartition(".")
        parent = sys.modules.get(parent_name)
        if parent is None:
            try:
                parent = importlib.import_module(parent_name)
            except ImportError:
                parent = types.ModuleType(parent_name)
                parent.__path__ = []  # a package, for the import system
                sys.modules[parent_name] = parent
        setattr(parent, leaf, child)
        child = parent
    return module


def install_azure_names() -> None:
    """The module names Azure's scripts import, answered by this file (the request and response modules always, as
    Azure's server does; `azureml.core` unless a real SDK is installed)."""
    for package in ("azureml.contrib.services", "azureml_inference_server_http.api"):
        _module(f"{package}.aml_request", AMLRequest=AMLRequest, rawhttp=rawhttp)
        _module(f"{package}.aml_response", AMLResponse=AMLResponse)
    try:
        import azureml.core.model  # noqa: F401 - a real SDK is there: leave it
    except ImportError:
        _module("azureml.exceptions", ModelNotFoundException=ModelNotFoundException,
                WebserviceException=WebserviceException)
        _module("azureml.core.model", Model=Model)
        sys.modules["azureml.core"].Model = Model  # `from azureml.core import Model`


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
    if "inference_schema" not in sys.modules:  # the script did not import it: no decorator of its is there
        return False
    from inference_schema.schema_util import is_schema_decorated

    return bool(is_schema_decorated(run))


def _conversion_error(run, error: BaseException) -> bool:
    """The exception was raised by inference-schema while converting an argument to its declared type, before the
    script's own run() was entered: the request's fault (a 400), not the script's."""
    own_code = getattr(inspect.unwrap(run), "__code__", None)
    package = os.sep + "inference_schema" + os.sep
    frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
    if any(frame.f_code is own_code for frame in frames):
        return False
    return any(package in frame.f_code.co_filename for frame in frames)


def swagger(script: Script | None, app_root: str, version: str) -> dict:
    """The swagger document of `version` (2, 3 or 3.1, with aliases 2.0 and 3.0): the app's own swagger*.json, else
    Azure's template around the schemas of the decorators (an undecorated run() gets empty objects)."""
    aliases = {"2": "2", "2.0": "2", "3": "3", "3.0": "3", "3.1": "3.1"}
    if version not in aliases:
        raise _HttpError(404, f"Swagger version [{version}] is not valid. Supported versions: [2, 3, 3.1].")
    wanted = aliases[version]
    for name in {"2": ("swagger.json", "swagger2.json"), "3": ("swagger3.json",), "3.1": ("swagger3.1.json",)}[wanted]:
        path = os.path.join(app_root, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
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
    return _swagger_document(wanted, input_schema, output_schema)


def _swagger_document(version: str, input_schema: dict, output_schema: dict) -> dict:
    """azureml-inference-server-http's swagger2_template.json / swagger3_template.json, filled in as it fills them."""
    title = os.environ.get("SERVICE_NAME", "ML service")
    info = {"title": title, "description": f"API specification for the Azure Machine Learning service {title}",
            "version": os.environ.get("SERVICE_VERSION", "1.0")}
    prefix = os.environ.get("SERVICE_PATH_PREFIX", "").strip("/")
    prefix = f"/{prefix}" if prefix else ""
    healthy = "If service is up and running, this response will be returned with the content 'Healthy'"
    scored = "The service processed the input correctly and provided a result prediction, if applicable."
    failed = "The service failed to execute due to an error."
    payload = "The input payload for executing the real-time machine learning service."
    health_description = "Simple health check endpoint to ensure the service is up at any given point."
    error = {"type": "object", "properties": {"message": {"type": "string"}}}
    if version == "2":
        default = {"description": failed, "schema": {"$ref": "#/definitions/ErrorResponse"}}
        return {
            "swagger": "2.0", "info": info, "schemes": ["https"], "consumes": ["application/json"],
            "produces": ["application/json"],
            "securityDefinitions": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header",
                                               "description": "For example: Bearer abc123"}},
            "paths": {
                f"{prefix}/": {"get": {
                    "operationId": "ServiceHealthCheck", "description": health_description,
                    "responses": {"200": {"description": healthy, "schema": {"type": "string"},
                                          "examples": {"application/json": "Healthy"}}, "default": default}}},
                f"{prefix}/score": {"post": {
                    "operationId": "RunMLService", "description": "Run web service's model and get the prediction "
                                                                  "output",
                    "security": [{"Bearer": []}],
                    "parameters": [{"name": "serviceInputPayload", "in": "body", "description": payload,
                                    "schema": {"$ref": "#/definitions/ServiceInput"}}],
                    "responses": {"200": {"description": scored, "schema": {"$ref": "#/definitions/ServiceOutput"}},
                                  "default": default}}},
                f"{prefix}/swagger.json": {"get": {
                    "operationId": "GetSwaggerSpec", "description": "Get the Swagger specification.",
                    "parameters": [{"name": "version", "in": "query", "required": False, "type": "integer",
                                    "enum": [2, 3]}],
                    "responses": {"200": {"description": "The Swagger specification.", "schema": {"type": "string"}},
                                  "default": default}}},
            },
            "definitions": {"ServiceInput": input_schema, "ServiceOutput": output_schema, "ErrorResponse": error},
        }
    default = {"description": failed, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/ErrorResponse"}}}}
    return {
        "openapi": "3.1.0" if version == "3.1" else "3.0.3", "info": info, "security": [{"Bearer": []}],
        "paths": {
            f"{prefix}/": {"get": {
                "operationId": "ServiceHealthCheck", "description": health_description,
                "responses": {"200": {"description": healthy, "content": {"text/plain": {"schema": {
                    "type": "string", "example": "Healthy"}}}}, "default": default}}},
            f"{prefix}/score": {"post": {
                "operationId": "RunMLService", "description": "Run web service's model and get the prediction output",
                "security": [{"Bearer": []}],
                "requestBody": {"description": payload, "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/ServiceInput"}}}},
                "responses": {"200": {"description": scored, "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/ServiceOutput"}}}}, "default": default}}},
            f"{prefix}/swagger.json": {"get": {
                "operationId": "GetSwaggerSpec", "description": "Get the Swagger specification.",
                "parameters": [{"name": "version", "in": "query", "required": False,
                                "schema": {"type": "integer", "enum": [2, 3]}}],
                "responses": {"200": {"description": "The Swagger specification.", "content": {"text/plain": {
                    "schema": {"type": "string"}}}}, "default": default}}},
        },
        "components": {
            "schemas": {"ServiceInput": input_schema, "ServiceOutput": output_schema, "ErrorResponse": error},
            "securitySchemes": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header",
                                           "description": "For example: Bearer abc123"}},
        },
    }


# The HTTP server ------------------------------------------------------------------------------------------------------


class State:
    script: Script | None = None
    ready = threading.Event()
    slots: threading.BoundedSemaphore
    app_root = "/var/azureml-app"


class _BadRequest(Exception):
    """The request itself cannot be read (its framing): answered 400, and the connection closed."""


NOT_READY = "The scoring script is still initialising (init() has not returned)."
GET_PATHS = ("/", "/ready", "/swagger.json")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # answers go out at once (TCP_NODELAY)
    server_version = "studio-serving/1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        return  # the gateway records every request; the console is for the script's own output

    # Responses

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        if status in (204, 304) or 100 <= status < 200:
            body = b""  # these statuses carry no body (Content-Length: 0 all the same: the gateway reads by it)
        self.send_response(status)
        names = {name.lower() for name, _ in headers}
        for name, value in headers:
            self.send_header(name, value)
        if "content-type" not in names and body:
            self.send_header("Content-Type", "application/json")
        for name, value in self._request_ids():
            if name not in names:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        # Headers and body in one write: two small writes on a kept-alive connection wait for the peer's delayed
        # acknowledgement (40 ms a request) even with Nagle off.
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.flush_headers()

    def _request_ids(self) -> list[tuple[str, str]]:
        """Azure's request ids: x-request-id (the client's, else a new one), x-ms-request-id (the client's legacy id,
        else x-ms-client-request-id, else x-request-id) and x-ms-client-request-id when the client sent one."""
        request_id = (self.headers.get("x-request-id") or str(uuid.uuid4()))[:100]
        legacy = (self.headers.get("x-ms-request-id") or "")[:100]
        client = (self.headers.get("x-ms-client-request-id") or "")[:100]
        if legacy:
            client = client or legacy
        else:
            legacy = client or request_id
        ids = [("x-request-id", request_id), ("x-ms-request-id", legacy)]
        return ids + ([("x-ms-client-request-id", client)] if client else [])

    def _error(self, status: int, message: str, failed: bool = False) -> None:
        self._send(status, json.dumps({"message": message}).encode(),
                   [("Content-Type", "application/json"), ("x-ms-run-function-failed", str(failed))])

    # Requests

    def _body(self) -> bytes:
        """The whole body, by Content-Length or chunked, so that a kept-alive connection stays in step."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _BadRequest("The chunked request body is malformed.") from None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise _BadRequest("The request body ended early.")
                chunks.append(chunk)
                self.rfile.readline(65537)  # the CRLF after the chunk
        raw = self.headers.get("Content-Length")
        try:
            length = int(raw) if raw else 0
        except ValueError:
            raise _BadRequest(f"Content-Length {raw!r} is not a number.") from None
        if length < 0:
            raise _BadRequest(f"Content-Length {raw!r} is not a number.")
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise _BadRequest("The request body ended early.")
        return body

    def _handle(self) -> None:
        try:
            body = self._body()
        except _BadRequest as error:
            self.close_connection = True
            return self._error(400, str(error))
        path = urlsplit(self.path).path
        try:
            if path == "/score" and self.command in ("GET", "POST", "OPTIONS"):
                return self._score(body)
            if path in GET_PATHS and self.command in ("GET", "HEAD"):
                return self._get(path)
            if path in GET_PATHS and self.command == "OPTIONS":
                return self._send(200, b"", [("Allow", "GET, HEAD, OPTIONS"), ("Content-Type", "text/html")])
            if path in GET_PATHS or path == "/score":
                return self._error(405, "The method is not allowed for the requested URL.")
            return self._error(404, "The requested URL was not found on the server. If you entered the URL "
                                    "manually please check your spelling and try again.")
        except Exception:  # the server's own fault: told to the console, and a 500 without details to the client
            traceback.print_exc()
            sys.stderr.flush()
            self.close_connection = True
            return self._error(500, INTERNAL_FAILED)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle

    def _get(self, path: str) -> None:
        if path == "/":
            return self._send(200, b"Healthy", [("Content-Type", "text/html; charset=utf-8")])
        if path == "/ready":
            if State.ready.is_set():
                return self._send(200, b"Ready", [("Content-Type", "text/plain")])
            return self._error(503, NOT_READY)
        version = dict(parse_qsl(urlsplit(self.path).query)).get("version", "2")
        try:
            document = swagger(State.script, State.app_root, version)
        except _HttpError as error:
            return self._error(error.status, error.message)
        return self._send(200, json.dumps(document).encode(), [("Content-Type", "application/json")])

    def _score(self, body: bytes) -> None:
        method = self.command
        if not State.ready.is_set():
            return self._error(503, NOT_READY)
        if method == "OPTIONS" and not State.script.raw:  # Azure's answer to a CORS preflight
            return self._send(200, b"", [("Content-Type", "text/html; charset=utf-8"),
                                         ("x-ms-run-function-failed", "False")])
        if not State.slots.acquire(blocking=False):
            return self._error(429, "This instance is scoring as many requests as it may at once: try again.")
        try:
            headers = {name: value for name, value in self.headers.items()}
            try:
                arguments = State.script.arguments(method, self.path, headers, body)
            except _HttpError as error:
                return self._error(error.status, error.message)
            except Exception as error:  # e.g. a multipart body that does not parse
                return self._error(400, f"The request could not be read: {error}")
            started = time.perf_counter()
            try:
                result = State.script.call(arguments, headers)
            except _HttpError as error:  # a rawhttp script asked for JSON it was not sent
                return self._error(error.status, error.message)
            except Exception as error:
                if State.script.schema_decorated and _conversion_error(State.script.run, error):
                    return self._error(400, f"The input does not match the schema of run(): {error}")
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
                sys.stderr.flush()
                return self._error(500, INTERNAL_FAILED)
            return self._send(200, payload, [("Content-Type", "application/json"),
                                             ("x-ms-run-function-failed", "False"), ("x-ms-run-fn-exec-ms", elapsed)])
        finally:
            State.slots.release()


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
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True).start()
    entry = os.environ.get("AZUREML_ENTRY_SCRIPT", "score.py")
    print(f"studio-serving: loading {entry} and running init()", flush=True)
    started = time.perf_counter()
    try:
        State.script = Script(State.app_root, entry)
        State.script.init()
    except BaseException:
        traceback.print_exc()
        print("studio-serving: loading the scoring script or its init() failed: the instance stops.", file=sys.stderr,
              flush=True)
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
