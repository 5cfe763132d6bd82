"""Talking to the studio: a persistent connection for the sender thread, one-off `urllib` requests for the script's
own thread (creating a child run, reading tags), hand-built multipart bodies, and the retry policy both share.

Retry policy: network errors, 5xx and 429 are retried with exponential backoff (0.2 s doubling, at most 5 s
between attempts) until `give_up` seconds have passed; any other 4xx is final. Nothing here writes to stderr:
callers decide what to tell the user.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit

GIVE_UP_ENV = "STUDIO_SDK_GIVE_UP_SECONDS"
DEFAULT_GIVE_UP = 60.0
FIRST_DELAY = 0.2
MAX_DELAY = 5.0
USER_AGENT = "studio-sdk/0.1.0"


class Response(NamedTuple):
    status: int
    body: bytes
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500

    def message(self) -> str:
        """The server's `{"error": ...}` message, or the start of whatever it sent."""
        try:
            payload = json.loads(self.body)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            return payload["error"]
        text = self.body[:300].decode("utf-8", "replace").strip()
        return text or http.client.responses.get(self.status, "no message")

    def json(self):
        return json.loads(self.body)


class Unavailable(Exception):
    """The studio could not be reached (or kept answering 5xx/429) for the whole retry budget."""


def give_up_seconds(environ=os.environ) -> float:
    raw = environ.get(GIVE_UP_ENV, "")
    if not raw:
        return DEFAULT_GIVE_UP
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"{GIVE_UP_ENV}={raw!r} is not a number of seconds; unset it or use e.g. 60.")
    return value


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def with_retries(attempt: Callable[[], Response], give_up: float, sleep=time.sleep) -> Response:
    """Call `attempt` until it gives a final answer (2xx, or 4xx other than 429) and return that answer.

    Raises Unavailable once another wait would pass `give_up` seconds since the first attempt.
    """
    start = time.monotonic()
    delay = FIRST_DELAY
    while True:
        try:
            response = attempt()
        except (OSError, http.client.HTTPException) as exc:
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if not response.retryable:
                return response
            problem = f"HTTP {response.status}: {response.message()}"
            if response.retry_after is not None:
                delay = min(max(delay, response.retry_after), MAX_DELAY)
        if time.monotonic() - start + delay > give_up:
            raise Unavailable(problem)
        sleep(delay)
        delay = min(delay * 2, MAX_DELAY)


class Endpoint:
    """The studio's base URL and the run token: where requests go and how they are signed."""

    def __init__(self, api_url: str, token: str):
        parts = urlsplit(api_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"STUDIO_API_URL={api_url!r} is not an http(s) URL such as http://127.0.0.1:8000.")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path.rstrip("/")
        self.base_url = f"{parts.scheme}://{parts.netloc}{self.prefix}"
        self.token = token

    def headers(self, content_type: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json", "User-Agent": USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        return headers


class Connection:
    """One keep-alive connection, used only by the sender thread; reopened after any error."""

    def __init__(self, endpoint: Endpoint, timeout: float):
        self.endpoint = endpoint
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._used = False

    def _open(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.endpoint.scheme == "https" else http.client.HTTPConnection
        self._used = False
        return cls(self.endpoint.host, self.endpoint.port, timeout=self.timeout)

    def send(self, method: str, path: str, body: bytes, content_type: str) -> Response:
        """One request. A kept-alive connection the server has meanwhile closed is reopened once, at no cost."""
        try:
            return self._send_once(method, path, body, content_type)
        except (OSError, http.client.HTTPException):
            reused = self._used
            self.close()
            if not reused:
                raise
        return self._send_once(method, path, body, content_type)

    def _send_once(self, method: str, path: str, body: bytes, content_type: str) -> Response:
        if self._conn is None:
            self._conn = self._open()
        conn = self._conn
        try:
            if conn.sock is None:
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.request(method, self.endpoint.prefix + path, body=body, headers=self.endpoint.headers(content_type))
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        self._used = True
        if response.will_close:
            self.close()
        return Response(response.status, data, _retry_after(response.getheader("Retry-After")))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def forget(self) -> None:
        """Drop the connection without touching the socket (after fork, it belongs to the parent)."""
        self._conn = None


def direct(endpoint: Endpoint, method: str, path: str, payload=None, timeout: float = 30.0) -> Response:
    """One request from the script's own thread with urllib (no shared state with the sender thread)."""
    body = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        endpoint.base_url + path,
        data=body,
        method=method,
        headers=endpoint.headers("application/json" if body is not None else None),
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Response(response.status, response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Response(exc.code, exc.read(), _retry_after(exc.headers.get("Retry-After")))


def multipart(fields: dict, filename: str, content: bytes, content_type: str) -> tuple[bytes, str]:
    """A multipart/form-data body with text `fields` and one `file` part; returns (body, Content-Type header)."""
    boundary = f"studio-sdk-{uuid.uuid4().hex}"
    chunks = []
    for key, value in fields.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        )
    safe_name = filename.replace("\\", "/").rsplit("/", 1)[-1].replace('"', "%22").replace("\r", "").replace("\n", "")
    chunks.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
    )
    chunks.append(content)
    chunks.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"
