"""A small HTTP/1.1 load generator for the serving benches: N clients, each on its own kept-alive connection, sending
the same POST back to back for a fixed time, with every latency kept.

It runs asyncio streams on uvloop, with no HTTP library: each request is one prebuilt bytes object written at once,
each response read by Content-Length (or chunks). That costs 60-80 µs of CPU per request here, less than any of the
servers measured spends on one. A server that answers `Connection: close` (or closes the socket) gets a new
connection for the next request, and that connection's set-up counts in the request's latency, as it does for a
real client.

    result = run_load("127.0.0.1", 8000, "/score", body, headers={"Authorization": "Bearer k"}, clients=8,
                      seconds=20, warmup=2)
    result.rps, result.p(50), result.errors
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from endpoints.gateway import read_response_body  # noqa: E402  (the gateway's own reader: stdlib at import time)


@dataclass
class LoadResult:
    seconds: float  # the measured window (after the warm-up)
    latencies: list[float] = field(default_factory=list)  # seconds, of the 2xx answers in the window
    errors: int = 0  # answers other than 2xx, and requests that failed (refused, reset, timed out)
    statuses: dict[int, int] = field(default_factory=dict)  # status -> count, in the window
    connections: int = 0  # connections opened, warm-up included
    answered: int = 0  # responses received, warm-up included, whatever their status
    failures: list[str] = field(default_factory=list)  # the first few error descriptions

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        """Nearest-rank percentile in milliseconds (nan without any answer)."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1] * 1000


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, the server keeps the connection) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    first, _, rest = head.partition(b"\r\n")
    version, status = first.split(b" ", 2)[:2]
    length, chunked, keep = None, False, version == b"HTTP/1.1"
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep = value.strip().lower() != b"close"
    body, keep = await read_response_body(reader, chunked, length, keep)
    return int(status), body, keep


async def _load(host, port, request, clients, seconds, warmup, timeout, check) -> LoadResult:
    clock = time.perf_counter
    start = clock() + warmup
    end = start + seconds
    result = LoadResult(seconds=seconds)

    async def client() -> None:
        reader = writer = None
        while True:
            began = clock()
            if began >= end:
                break
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                    result.connections += 1
                writer.write(request)
                status, body, keep = await asyncio.wait_for(read_response(reader), timeout)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as error:
                if writer is not None:
                    writer.close()
                reader = writer = None
                if began >= start:
                    result.errors += 1
                    if len(result.failures) < 5:
                        result.failures.append(f"{type(error).__name__}: {error}")
                await asyncio.sleep(0.01)  # a refusing server is not hammered in a tight loop
                continue
            done = clock()
            result.answered += 1
            if not keep:
                writer.close()
                reader = writer = None
            if began < start or done > end:
                continue
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if 200 <= status < 300 and (check is None or check(body)):
                result.latencies.append(done - began)
            else:
                result.errors += 1
                if len(result.failures) < 5:
                    result.failures.append(f"HTTP {status}: {body[:200]!r}")
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    await asyncio.gather(*(client() for _ in range(clients)))
    return result


def run_load(host: str, port: int, path: str, body: bytes, *, headers: dict[str, str] | None = None,
             clients: int = 8, seconds: float = 20, warmup: float = 2, timeout: float = 30,
             check=None) -> LoadResult:
    """`clients` concurrent clients POSTing `body` to `path` for `warmup` + `seconds` seconds; the requests started
    and answered within the last `seconds` are counted. `check(body)` may refuse a 2xx answer's body (an error)."""
    import uvloop

    request = request_bytes(host, port, path, body, headers)
    return uvloop.run(_load(host, port, request, clients, seconds, warmup, timeout, check))
