"""A stand-in for the studio's run API, for the SDK's tests: a real HTTP server in a thread that records what it
receives and can be told to fail.

    with FakeStudio() as studio:
        studio.fail_next(3)            # the next 3 requests get 503
        studio.drop_next(2)            # the next 2 connections are closed without an answer
        studio.refuse_next(400, "Invalid name")
        ...
        studio.points(7)               # [(name, step, value, time), ...] for run 7, in arrival order
"""

from __future__ import annotations

import array
import base64
import email.parser
import email.policy
import itertools
import json
import math
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "run-token-123"


@dataclass
class Request:
    method: str
    path: str
    headers: dict
    body: bytes
    json: object = None
    form: dict = field(default_factory=dict)  # multipart: name -> str, or (filename, content_type, bytes) for files

    @property
    def run_id(self) -> int:
        return int(self.path.split("/")[4])

    @property
    def endpoint(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def _parse_multipart(content_type: str, body: bytes) -> dict:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    form = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        form[name] = (filename, part.get_content_type(), payload) if filename else payload.decode()
    return form


def _reject_constant(token: str):
    raise ValueError(f"{token} is not strict JSON")


class FakeStudio:
    def __init__(self):
        self.requests: list[Request] = []
        self.attempts = 0
        self.tags: dict[int, dict] = {}
        self._lock = threading.Lock()
        self._failures: list = []  # queued ("status", code, message) or ("drop",)
        self._child_ids = itertools.count(1000)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeStudio:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # Telling it to misbehave ----------------------------------------------------------------------------------
    def fail_next(self, times: int, status: int = 503) -> None:
        with self._lock:
            self._failures += [("status", status, "Try again later.")] * times

    def refuse_next(self, status: int, message: str) -> None:
        with self._lock:
            self._failures.append(("status", status, message))

    def drop_next(self, times: int) -> None:
        with self._lock:
            self._failures += [("drop",)] * times

    # Reading what arrived -------------------------------------------------------------------------------------
    def received(self, endpoint: str, run_id: int | None = None, method: str = "POST") -> list[Request]:
        with self._lock:
            return [
                r for r in self.requests
                if r.endpoint == endpoint and r.method == method and (run_id is None or r.run_id == run_id)
            ]

    def points(self, run_id: int) -> list[tuple]:
        """Every point received for the run, as (name, step or None, value, time), unpacked from the columns."""
        found = []
        for request in self.received("metrics", run_id):
            for series in request.json["series"]:
                for step, value, at in unpack(series):
                    found.append((series["name"], step, value, at))
        return found

    def env(self, run_id: int = 7, **extra) -> dict:
        return {"STUDIO_RUN_ID": str(run_id), "STUDIO_API_URL": self.url, "STUDIO_RUN_TOKEN": TOKEN, **extra}

    # The server side ------------------------------------------------------------------------------------------
    def _answer(self, request: Request):
        """(status, payload) for a request that is not failed on purpose."""
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, {"error": "Invalid run token."}
        kind = request.endpoint
        if request.method == "GET" and kind == "tags":
            return 200, {"tags": self.tags.get(request.run_id, {})}
        if kind == "metrics":
            return 200, {"stored": sum(s["count"] for s in request.json["series"])}
        if kind == "entries":
            return 200, {"stored": len(request.json["entries"])}
        if kind == "tags":
            self.tags.setdefault(request.run_id, {}).update(request.json["tags"])
            return 200, {"tags": self.tags[request.run_id]}
        if kind == "children":
            return 201, {"run_id": next(self._child_ids)}
        if kind in ("images", "files"):
            return 201, {"name": request.form["name"]}
        if kind == "status":
            return 200, {"status": request.json["status"]}
        return 404, {"error": f"No route for {request.path}."}

    def _handler_class(self):
        studio = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as uvicorn does: headers and body go out without waiting for an ACK

            def log_message(self, format, *args):  # quiet
                pass

            def _reply(self, status: int, payload) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with studio._lock:
                    studio.attempts += 1
                    failure = studio._failures.pop(0) if studio._failures else None
                if failure and failure[0] == "drop":
                    self.close_connection = True
                    return
                if failure:
                    self._reply(failure[1], {"error": failure[2]})
                    return
                content_type = self.headers.get("Content-Type", "")
                request = Request(method, self.path, dict(self.headers), body)
                if content_type.startswith("application/json"):
                    try:
                        request.json = json.loads(body, parse_constant=_reject_constant)
                    except ValueError as exc:
                        self._reply(400, {"error": f"Invalid JSON: {exc}"})
                        return
                elif content_type.startswith("multipart/form-data"):
                    request.form = _parse_multipart(content_type, body)
                with studio._lock:
                    status, payload = studio._answer(request)
                    if status < 300:
                        studio.requests.append(request)
                self._reply(status, payload)

            def do_POST(self):
                self._handle("POST")

            def do_GET(self):
                self._handle("GET")

        return Handler


def unpack(series: dict) -> list[tuple]:
    """(step or None, value, time) of a packed series as the SDK sends it; NaN and infinities stay floats."""
    raw = array.array("d", base64.b64decode(series["packed"]))
    if sys.byteorder != "little":
        raw.byteswap()
    count = series["count"]
    steps, values, times = raw[:count], raw[count : 2 * count], raw[2 * count :]
    return [(None if math.isnan(s) else s, v, t) for s, v, t in zip(steps, values, times, strict=True)]
