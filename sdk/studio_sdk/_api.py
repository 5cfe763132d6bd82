"""The client side's REST calls: one small class over urllib (standard library only) that sends a personal token,
retries what can be retried (network errors, 5xx, 429: `_http.with_retries`), and turns every refusal into a
`StudioError` carrying the server's own message and status.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

from studio_sdk import _http

DEFAULT_TIMEOUT = 60.0


class StudioError(Exception):
    """The studio refused a request (or could not be reached); `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class Api:
    def __init__(self, url: str, token: str, *, timeout: float = DEFAULT_TIMEOUT, give_up: float | None = None):
        if not url:
            raise StudioError("No studio URL: pass one, run `studio login`, or write .studio/config.json.")
        if not token:
            raise StudioError("No API token: set STUDIO_TOKEN, or run `studio login` (make one on the studio's "
                              "API tokens page).")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.give_up = _http.give_up_seconds() if give_up is None else give_up

    # Plumbing ----------------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None,
                 query: dict | None = None, headers: dict | None = None, timeout: float | None = None):
        url = f"{self.url}/api/v1{path}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("Authorization", f"Token {self.token}")
        request.add_header("User-Agent", _http.USER_AGENT)
        if content_type:
            request.add_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        return urllib.request.urlopen(request, timeout=timeout or self.timeout)

    def call(self, method: str, path: str, payload=None, *, query: dict | None = None, body: bytes | None = None,
             content_type: str | None = None, retry: bool | None = None):
        """The JSON answer of one call; StudioError with the server's message otherwise. Reads retry by default;
        writes only when `retry` says so (a retried POST could do a thing twice)."""
        if payload is not None:
            body, content_type = json.dumps(payload).encode(), "application/json"
        retry = method in ("GET", "HEAD", "PUT", "DELETE") if retry is None else retry

        def attempt() -> _http.Response:
            try:
                with self._request(method, path, body=body, content_type=content_type, query=query) as response:
                    return _http.Response(response.status, response.read())
            except urllib.error.HTTPError as error:
                with error:
                    return _http.Response(error.code, error.read(),
                                          _http._retry_after(error.headers.get("Retry-After")))

        try:
            response = _http.with_retries(attempt, self.give_up) if retry else attempt()
        except _http.Unavailable as error:
            raise StudioError(f"The studio at {self.url} did not answer: {error}") from None
        except (OSError, ValueError) as error:
            raise StudioError(f"Could not reach the studio at {self.url}: {error}") from None
        if not response.ok:
            raise StudioError(response.message(), response.status)
        if not response.body:
            return None
        try:
            return response.json()
        except ValueError:
            return response.body

    def get(self, path: str, **query):
        return self.call("GET", path, query=query or None)

    def post(self, path: str, payload=None, **kwargs):
        return self.call("POST", path, payload if payload is not None else {}, **kwargs)

    def put(self, path: str, payload=None):
        return self.call("PUT", path, payload if payload is not None else {})

    def patch(self, path: str, payload):
        return self.call("PATCH", path, payload)

    def delete(self, path: str):
        return self.call("DELETE", path)

    def download(self, path: str, target, *, query: dict | None = None) -> int:
        """Stream a file into `target` (a path); returns the bytes written."""
        import os
        import shutil

        try:
            with self._request("GET", path, query=query, timeout=max(self.timeout, 600)) as response:
                os.makedirs(os.path.dirname(os.path.abspath(target)) or ".", exist_ok=True)
                partial = f"{target}.part"
                with open(partial, "wb") as out:
                    shutil.copyfileobj(response, out, 1024 * 1024)
                    written = out.tell()
                os.replace(partial, target)
                return written
        except urllib.error.HTTPError as error:
            with error:
                raise StudioError(_http.Response(error.code, error.read()).message(), error.code) from None
        except OSError as error:
            raise StudioError(f"Could not download {path}: {error}") from None

    def upload(self, path: str, fileobj, size: int, content_type: str, *, query: dict | None = None):
        """POST a file's bytes as the body, streamed (one attempt: a retried upload could register twice)."""
        try:
            with self._request("POST", path, body=fileobj, content_type=content_type, query=query,
                               headers={"Content-Length": str(size)}, timeout=max(self.timeout, 3600)) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            with error:
                raise StudioError(_http.Response(error.code, error.read()).message(), error.code) from None
        except OSError as error:
            raise StudioError(f"Could not reach the studio at {self.url}: {error}") from None
        return json.loads(payload) if payload else None

    def events(self, path: str, last_id: str | None = None) -> Iterator[tuple[str, str, dict]]:
        """Server-sent events of a live stream: (event, id, data) as they arrive."""
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        try:
            response = self._request("GET", path, headers=headers, timeout=3600)
        except urllib.error.HTTPError as error:
            with error:
                raise StudioError(_http.Response(error.code, error.read()).message(), error.code) from None
        except OSError as error:
            raise StudioError(f"Could not reach the studio at {self.url}: {error}") from None
        with response:
            event, event_id, data = "message", "", []
            while True:
                raw = response.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    if data:
                        try:
                            payload = json.loads("\n".join(data))
                        except ValueError:
                            payload = {}
                        yield event, event_id, payload
                    event, data = "message", []
                    continue
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
                elif field == "id":
                    event_id = value

    def multipart(self, path: str, fields: dict, files: list[tuple[str, str, bytes]]):
        """POST a multipart form: text `fields` and (field, filename, content) files."""
        import uuid

        boundary = f"studio-sdk-{uuid.uuid4().hex}"
        chunks = []
        for key, value in fields.items():
            chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
        for field, filename, content in files:
            safe = filename.replace("\\", "/").rsplit("/", 1)[-1].replace('"', "%22").replace("\r", "").replace(
                "\n", "")
            chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{safe}"\r\n'
                          f"Content-Type: application/octet-stream\r\n\r\n".encode())
            chunks.append(content)
            chunks.append(b"\r\n")
        chunks.append(f"--{boundary}--\r\n".encode())
        return self.call("POST", path, body=b"".join(chunks),
                         content_type=f"multipart/form-data; boundary={boundary}", retry=False)


def quote(value) -> str:
    return urllib.parse.quote(str(value), safe="")
