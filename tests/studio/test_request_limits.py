"""Big input is refused before it is read, through the real ASGI server (uvicorn) and over raw sockets:

- a declared Content-Length over a route's limit is answered 413 at once, and not a byte of the body is stored;
- a body without a declared length (chunked) is read only until it passes the limit, then refused;
- pages answer a page, the API JSON.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from runs import tokens
from runs.models import RunStatus
from tests import services
from tests.conftest import make_run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
UPLOAD_LIMIT = 2 * 1024 * 1024
MULTIPART_OVERHEAD = 1024 * 1024
CHUNK = 256 * 1024


@pytest.fixture(scope="module")
def small_web(e2e_env, studio_services):
    """A web server whose uploads from scripts are limited to 2 MB."""
    service, url = services.start_web({**e2e_env, "STUDIO_UPLOAD_MAX_BYTES": str(UPLOAD_LIMIT)}, studio_services["base"])
    yield service, url
    service.stop()


@pytest.fixture
def running(cast, workspace):
    run = make_run(workspace, cast["carol"])
    for to, source in ((RunStatus.PREPARING, RunStatus.QUEUED), (RunStatus.STARTING, RunStatus.PREPARING),
                       (RunStatus.RUNNING, RunStatus.STARTING)):
        run.transition(to, from_states=(source,))
    return run, tokens.issue(run)


def uploads_folder(studio_services):
    return studio_services["data_dir"] / "tmp" / "uploads"


def files_under(folder) -> list:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def raw_request(url: str, head: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head.encode())
    return sock


def answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith((b"}", b"</html>", b"0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_declared_length_over_the_limit_is_refused_at_once_and_nothing_is_stored(web, running, studio_services):
    run, token = running
    before = files_under(uploads_folder(studio_services))
    started = time.monotonic()
    sock = raw_request(web, f"POST /api/v1/runs/{run.pk}/files HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            f"Authorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                            f"Content-Length: {100 * 1024**3}\r\n\r\n")
    reply = answer(sock)
    elapsed = time.monotonic() - started
    sock.close()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"error"' in reply and b"too large" in reply
    assert elapsed < 2
    assert files_under(uploads_folder(studio_services)) == before


def test_a_chunked_upload_is_read_only_until_it_passes_the_limit(small_web, running, studio_services):
    service, url = small_web
    run, token = running
    sock = raw_request(url, f"POST /api/v1/runs/{run.pk}/files HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            f"Authorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                            f"Transfer-Encoding: chunked\r\n\r\n")
    head = (b'--B\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig.bin\r\n--B\r\n'
            b'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n')
    sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
    sent = 0
    with pytest.raises(OSError):  # the server stops reading and closes: sending fails long before 1 GB
        while sent < 1024**3:
            sock.sendall(b"%x\r\n%s\r\n" % (CHUNK, b"\0" * CHUNK))
            sent += CHUNK
    sock.close()
    limit = UPLOAD_LIMIT + MULTIPART_OVERHEAD
    log = services.wait_until(lambda: re.search(r"after reading (\d+) bytes: the limit here is (\d+)", service.log()),
                              10, "the refusal in the web log")
    read, logged_limit = int(log.group(1)), int(log.group(2))
    assert logged_limit == limit and limit < read <= limit + CHUNK
    assert not (run.pk and (studio_services["data_dir"] / "runs" / str(run.pk) / "outputs" / "big.bin").exists())


def test_a_page_upload_over_the_limit_gets_a_page_saying_so(web, cast, workspace):
    sock = raw_request(web, "POST /w/lab/runs/new/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            "Content-Type: multipart/form-data; boundary=B\r\n"
                            f"Content-Length: {2 * 1024**3}\r\nAccept: text/html\r\n\r\n")
    reply = answer(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"text/html" in reply.split(b"\r\n\r\n")[0] and b"too large" in reply


def test_a_json_body_over_the_default_limit_is_refused(web, running):
    run, token = running
    sock = raw_request(web, f"POST /api/v1/runs/{run.pk}/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                            f"Content-Length: {64 * 1024**2}\r\n\r\n")
    reply = answer(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 413") and b"16,777,216 bytes" in reply
