"""Refusing uploads over the limit: a 2 GB body to the run-submission API (`POST /api/v1/workspaces/<ws>/runs`, whose
limit is STUDIO_SNAPSHOT_MAX_BYTES plus 1 MiB for the form), sent over a raw socket to the real server (uvicorn).

- With a declared Content-Length: the time from the last header byte sent to the 413 received, and the bytes written
  to the upload folder and the data dir meanwhile. Target: under 50 ms, 0 bytes.
- Without one (Transfer-Encoding: chunked, 1 MiB chunks sent as fast as the socket takes them): how many bytes the
  server read before refusing (from its log), how far past the limit that is, the largest the upload's temporary file
  got (sampled every 5 ms), and the time to the 413. Target: the server stops reading within one chunk of the limit,
  and temporary disk stays under the limit plus one chunk.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _services  # noqa: E402
from _services import services  # noqa: E402

TARGET_MS = 50
CHUNK = 1024 * 1024
BODY = 2 * 1024**3


def folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def head(token: str, workspace: str, extra: str) -> bytes:
    return (f"POST /api/v1/workspaces/{workspace}/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Token {token}\r\nContent-Type: multipart/form-data; boundary=B\r\n{extra}\r\n").encode()


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def declared(url: str, token: str, workspace: str, data_dir: Path) -> tuple[float, int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    before = folder_bytes(data_dir)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message = head(token, workspace, f"Content-Length: {BODY}\r\n")
    started = time.perf_counter()
    sock.sendall(message)
    answer = read_answer(sock)
    elapsed = time.perf_counter() - started
    sock.close()
    return elapsed, folder_bytes(data_dir) - before, answer.split(b"\r\n", 1)[0]


def chunked(url: str, token: str, workspace: str, uploads: Path) -> dict:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], folder_bytes(uploads))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sock.sendall(head(token, workspace, "Transfer-Encoding: chunked\r\n"))
    part = (b'--B\r\nContent-Disposition: form-data; name="experiment"\r\n\r\nbig\r\n--B\r\n'
            b'Content-Disposition: form-data; name="source"; filename="big.zip"\r\n\r\n')
    sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
    chunk = b"%x\r\n%s\r\n" % (CHUNK, b"\0" * CHUNK)
    sent, started = 0, time.perf_counter()
    try:
        while sent < BODY:
            sock.sendall(chunk)
            sent += CHUNK
    except OSError:
        pass
    try:
        answer = read_answer(sock).split(b"\r\n", 1)[0]
    except OSError as error:
        answer = f"(no answer: {error})".encode()
    elapsed = time.perf_counter() - started
    sock.close()
    time.sleep(0.05)
    stop.set()
    sampler.join()
    return {"sent": sent, "answer": answer, "seconds": elapsed, "peak": peak[0]}


def main() -> int:
    parser = _services.parser(__doc__)
    args = _services.parse(parser, concurrency=False)
    with _services.Stack(keep=args.keep, worker=False) as stack:
        from django.conf import settings

        from studio.models import ApiToken

        token = ApiToken.issue(stack.user, "bench")[1]
        limit = settings.STUDIO_SNAPSHOT_MAX_BYTES + 1024 * 1024
        data_dir = stack.base / "data"
        uploads = data_dir / "tmp" / "uploads"
        timings = []
        for _ in range(10):
            seconds, written, status = declared(stack.url, token, stack.workspace.name, data_dir)
            timings.append(seconds)
            if not status.startswith(b"HTTP/1.1 413") or written:
                raise RuntimeError(f"declared 2 GB: {status!r}, {written} bytes written")
        result = chunked(stack.url, token, stack.workspace.name, uploads)
        found = services.wait_until(
            lambda: re.search(r"after reading (\d+) bytes: the limit here is (\d+)", stack.log("web")), 10,
            "the refusal in the web log")
        read = int(found.group(1))
    worst = max(timings) * 1000
    print(f"# declared: 10 requests, each 413 with 0 bytes written; times "
          f"{', '.join(f'{t * 1000:.1f}' for t in timings)} ms")
    print(f"# chunked: sent {result['sent'] / 1024**2:,.0f} MiB before the socket refused more; answer "
          f"{result['answer'].decode(errors='replace')} after {result['seconds']:.2f} s")
    over = read - limit
    print(f"declared 2 GB Content-Length: 413 in at most {worst:.1f} ms (median {sorted(timings)[5] * 1000:.1f} ms), "
          f"0 bytes written; target < {TARGET_MS} ms: {'PASS' if worst < TARGET_MS else 'FAIL'}")
    print(f"chunked 2 GB: the server read {read:,} bytes, {over:,} past the limit of {limit:,} (one chunk: {CHUNK:,}); "
          f"temporary file at most {result['peak']:,} bytes; target within one chunk: "
          f"{'PASS' if 0 < over <= CHUNK and result['peak'] <= limit + CHUNK else 'FAIL'}")
    return 0 if worst < TARGET_MS and 0 < over <= CHUNK else 1


if __name__ == "__main__":
    sys.exit(main())
