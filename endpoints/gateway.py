"""The scoring gateway: a lean ASGI server in front of every deployment's instances, outside Django's request path.

    python -m endpoints.gateway --host 127.0.0.1 --port 8001   (studioctl.py start runs it, supervised)

`POST /endpoints/<workspace>/<endpoint>/score` (and `GET .../swagger.json`):

1. checks the key (`Authorization: Bearer <key>`, the endpoint's primary or secondary key): 401 otherwise;
2. picks the deployment by the `azureml-model-deployment` header, else by the traffic split (weighted at random);
3. picks an instance of its live revision (round robin, skipping full ones: `max_concurrent_requests` each, 429 when
   every instance is full), forwards over a kept-alive connection, and answers 504 after the request timeout; an
   instance that sends no byte of an answer (refused, or closed: killed, or a stale kept-alive connection) passes the
   request on to a new connection, then to the next instance (a request is sent twice only when one died with it);
4. sends a copy to each mirror deployment by its percentage, whose answer is recorded and discarded;
5. records the request (time, deployment, instance, status, latency, sizes) in memory; a writer thread stores them
   in batches, and ten-second summaries per deployment (count, errors, p50/p95/p99) for the charts.

The routing table comes from the database (`endpoints/routing.py`), rebuilt by a loader thread when the studio
publishes a change and every few seconds, and swapped in whole: the event loop never waits on the database.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hmac
import itertools
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, datetime

logger = logging.getLogger("studio.gateway")
RELOAD_SECONDS = 3.0
FLUSH_SECONDS = 0.5
BUCKET_SECONDS = 10
MAX_BODY = 100 * 1024 * 1024
MAX_PENDING_RECORDS = 200_000
PATH_PREFIX = "/endpoints/"
NOT_FORWARDED = frozenset({  # set by the gateway itself, the endpoint's key, or about this hop only
    b"x-ms-request-id", b"x-request-id", b"content-type", b"content-length", b"host", b"authorization", b"connection", b"keep-alive",
    b"transfer-encoding", b"te", b"trailer", b"upgrade", b"expect", b"proxy-authorization", b"proxy-connection"})


_REQUEST_IDS = itertools.count(1)
_REQUEST_ID_PREFIX = str(uuid.uuid4())[:24]  # this process's own: ids stay unique across gateways and restarts


def new_request_id() -> str:
    """A request id shaped like a version-4 UUID, unique per request: a random prefix per process and a counter
    (a tenth of the cost of uuid4(), which reads the system's random source every time)."""
    return f"{_REQUEST_ID_PREFIX}{next(_REQUEST_IDS) & 0xFFFFFFFFFFFF:012x}"


def _json(status: int, message: str, headers: list | None = None):
    body = json.dumps({"message": message}).encode()
    return status, [(b"content-type", b"application/json")] + (headers or []), body


# Forwarding over kept-alive connections -----------------------------------------------------------------------------


class Unreached(ConnectionError):
    """The instance never answered: no connection, or it was closed or reset before any byte of a response (a stale
    kept-alive connection, a killed container). Another instance may take the request."""


class Upstream:
    """A pool of kept-alive HTTP/1.1 connections to one instance, and how many requests it is serving."""

    def __init__(self, host: str, port: int, label: str):
        self.host, self.port, self.label = host, port, label
        self.idle: deque = deque()
        self.in_flight = 0

    async def request(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes,
                      timeout: float) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        reader = writer = None
        reused = bool(self.idle)
        try:
            if reused:
                reader, writer = self.idle.popleft()
            else:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout)
                except OSError as error:
                    raise Unreached(str(error)) from None
            head = [b"%s %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: %d\r\n" % (
                method.encode("latin-1"), path.encode("latin-1"), self.host.encode("latin-1"), self.port, len(body))]
            for name, value in headers:
                head += (name, b": ", value, b"\r\n")
            head += (b"\r\n", body)
            writer.write(b"".join(head))  # one write: one segment for a small request
            async with asyncio.timeout(timeout):  # no task per request, unlike asyncio.wait_for on Python 3.11
                status, response_headers, response_body, keep = await _read_response(reader)
        except BaseException as error:
            if writer is not None:
                writer.close()
            if reused and isinstance(error, Unreached):  # closed by the instance meanwhile, as the others may be
                while self.idle:
                    self.idle.popleft()[1].close()
                return await self.request(method, path, headers, body, timeout)
            raise
        if keep:
            self.idle.append((reader, writer))
        else:
            writer.close()
        return status, response_headers, response_body


async def read_response_body(reader, chunked: bool, length: int | None, keep: bool) -> tuple[bytes, bool]:
    """An HTTP/1.1 response's body after its head (chunked, by Content-Length, or to the end: then not kept)."""
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return b"".join(parts), keep
    if length is not None:
        return await reader.readexactly(length), keep
    return await reader.read(), False


async def _read_response(reader) -> tuple[int, list, bytes, bool]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (ConnectionError, asyncio.IncompleteReadError) as error:
        if isinstance(error, asyncio.IncompleteReadError) and error.partial:
            raise
        raise Unreached(str(error)) from None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers, length, chunked, keep = [], None, False, True
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and value.lower() == "close":
            keep = False
        if name not in ("content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"):
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
    body, keep = await read_response_body(reader, chunked, length, keep)
    return status, headers, body, keep


# Recording ----------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Record:
    endpoint: int
    deployment: str
    instance: str
    at: float
    status: int
    latency_ms: float
    request_bytes: int
    response_bytes: int
    mirrored: bool
    request_id: str
    payload: str = ""


class Recorder:
    """Requests kept in memory and written by a thread in batches, with ten-second summaries per deployment."""

    def __init__(self):
        self.pending: deque[Record] = deque()
        self.dropped = 0
        self.buckets: dict[tuple, list[float]] = defaultdict(list)
        self.bucket_errors: dict[tuple, int] = defaultdict(int)
        self.lock = threading.Lock()

    def add(self, record: Record) -> None:
        if len(self.pending) >= MAX_PENDING_RECORDS:  # the database is far behind: count what is not kept
            self.dropped += 1
            return
        self.pending.append(record)
        key = (record.endpoint, record.deployment, record.mirrored, int(record.at // BUCKET_SECONDS))
        with self.lock:
            self.buckets[key].append(record.latency_ms)
            if record.status >= 500 or record.status == 429:
                self.bucket_errors[key] += 1

    def flush(self, *, everything: bool = False) -> None:
        from django.db import close_old_connections

        from endpoints.models import Endpoint, RequestRecord, StatsBucket

        close_old_connections()
        batch = []
        while self.pending and len(batch) < 5000:
            batch.append(self.pending.popleft())
        if batch:
            try:
                self._write(RequestRecord, batch)
            except Exception:  # the database is away: the batch waits at the front, nothing is lost
                self.pending.extendleft(reversed(batch))
                raise
        current = int(time.time() // BUCKET_SECONDS)
        with self.lock:
            closed = [key for key in self.buckets if everything or key[3] < current]
            summaries = [(key, sorted(self.buckets.pop(key)), self.bucket_errors.pop(key, 0)) for key in closed]
        if summaries:
            try:
                alive = set(Endpoint.objects.filter(pk__in={key[0] for key, _, _ in summaries}).values_list(
                    "pk", flat=True))
                StatsBucket.objects.bulk_create([StatsBucket(
                    endpoint_id=key[0], deployment=key[1], mirrored=key[2],
                    start=datetime.fromtimestamp(key[3] * BUCKET_SECONDS, tz=UTC), count=len(values),
                    errors=errors, p50_ms=_percentile(values, 50), p95_ms=_percentile(values, 95),
                    p99_ms=_percentile(values, 99)) for key, values, errors in summaries if key[0] in alive])
            except Exception:
                with self.lock:
                    for key, values, errors in summaries:
                        self.buckets[key].extend(values)
                        self.bucket_errors[key] += errors
                raise

    @staticmethod
    def _write(RequestRecord, batch) -> None:
        """The batch as one INSERT run over its rows (executemany), in one transaction. The ORM's bulk_create made a
        model instance and compiled SQL for every row: about 40 µs a request against 9, taken from the event loop's
        share of the interpreter lock under load."""
        from django.db import connection, transaction

        from endpoints.models import Endpoint

        alive = set(Endpoint.objects.filter(pk__in={r.endpoint for r in batch}).values_list("pk", flat=True))
        sql, others = _record_insert(RequestRecord, connection)
        adapt = connection.ops.adapt_datetimefield_value
        rows = [(r.endpoint, r.deployment, r.instance, adapt(datetime.fromtimestamp(r.at, tz=UTC)), r.status,
                 r.latency_ms, r.request_bytes, r.response_bytes, r.mirrored, r.request_id, r.payload, *others)
                for r in batch if r.endpoint in alive]
        if rows:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(sql, rows)


RECORD_FIELDS = ("endpoint", "deployment", "instance", "at", "status", "latency_ms", "request_bytes", "response_bytes",
                 "mirrored", "request_id", "payload")  # in the order of the rows `Recorder._write` makes


def _record_insert(model, connection) -> tuple[str, tuple]:
    """The INSERT of a request record, and the values of any column a Record does not carry (their defaults)."""
    others = [f for f in model._meta.concrete_fields if not f.primary_key and f.name not in RECORD_FIELDS]
    fields = [model._meta.get_field(name) for name in RECORD_FIELDS] + others
    quote = connection.ops.quote_name
    sql = (f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
           f"VALUES ({', '.join(['%s'] * len(fields))})")
    return sql, tuple(f.get_db_prep_save(f.get_default(), connection) for f in others)


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


# The gateway --------------------------------------------------------------------------------------------------------


class Gateway:
    def __init__(self):
        self.table: dict = {}
        self.upstreams: dict[tuple[str, int, str], Upstream] = {}
        self.cursor: dict[str, int] = defaultdict(int)
        self.recorder = Recorder()
        self.loaded = threading.Event()
        self.mirroring: set[asyncio.Task] = set()
        self.pruned_for: dict | None = None  # the table whose gone instances' connections were last closed

    # Threads: the table and the records --------------------------------------------------------------------------
    def start_threads(self) -> None:
        threading.Thread(target=self._load_loop, name="gateway-loader", daemon=True).start()
        threading.Thread(target=self._flush_loop, name="gateway-writer", daemon=True).start()

    def reload(self) -> None:
        from django.db import close_old_connections

        from endpoints.routing import build_table

        close_old_connections()
        self.table = build_table()
        self.loaded.set()

    def _load_loop(self) -> None:
        from endpoints.routing import CHANNEL
        from studio.redis_client import get_redis

        pubsub = None
        while True:
            try:
                self.reload()
            except Exception:  # the database blinked: keep the last table, try again
                logger.warning("Routing table not reloaded", exc_info=True)
            try:
                if pubsub is None:
                    pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(CHANNEL)
                pubsub.get_message(timeout=RELOAD_SECONDS)
                while pubsub.get_message(timeout=0.01):  # several changes at once: one reload
                    pass
            except Exception:
                pubsub = None
                time.sleep(RELOAD_SECONDS)

    def _flush_loop(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.recorder.flush()
            except Exception:
                logger.warning("Request records not written yet", exc_info=True)

    # Requests ------------------------------------------------------------------------------------------------------
    def upstream(self, host: str, port: int, label: str) -> Upstream:
        found = self.upstreams.get((host, port, label))
        if found is None:  # the label too: a port freed by a removed instance may be given to another one
            found = self.upstreams[(host, port, label)] = Upstream(host, port, label)
        return found

    def pick_instance(self, route, unreached: tuple = ()) -> Upstream | None:
        instances = route.instances
        if not instances:
            return None
        start = self.cursor[route.name]
        self.cursor[route.name] = start + 1
        for offset in range(len(instances)):
            host, port, label = instances[(start + offset) % len(instances)]
            upstream = self.upstream(host, port, label)
            if upstream.in_flight < route.max_concurrent and upstream not in unreached:
                return upstream
        return None

    async def forward(self, endpoint, route, method: str, path: str, headers, body: bytes, request_id: str,
                      *, mirrored: bool = False, payload: str = ""):
        started = time.perf_counter()
        upstream, label, result = self.pick_instance(route), "", None
        unreached: list[Upstream] = []
        while upstream is not None:  # an instance that never answered (just killed, say): the next one takes it
            label = upstream.label
            upstream.in_flight += 1
            try:
                result = await upstream.request(method, path, headers, body, route.timeout)
            except TimeoutError:
                result = _json(504, f"Deployment {route.name} did not answer within {route.timeout:g} s.")
            except Unreached:
                unreached.append(upstream)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                result = _json(502, f"Deployment {route.name}'s instance {label} could not be reached.")
            finally:
                upstream.in_flight -= 1
            if result is not None:
                break
            upstream = self.pick_instance(route, tuple(unreached))
        if result is None:
            result = (_json(502, f"Deployment {route.name}'s instance {label} could not be reached.") if unreached
                      else _json(429, f"Deployment {route.name} is serving as many requests as it may "
                                      f"({route.max_concurrent} per instance): try again shortly.")
                      if route.instances else _json(503, f"Deployment {route.name} has no ready instance."))
        status, response_headers, response_body = result
        latency = (time.perf_counter() - started) * 1000
        self.recorder.add(Record(endpoint.id, route.name, label, time.time(), status, latency, len(body),
                                 len(response_body), mirrored, request_id, payload))
        return status, response_headers, response_body

    def forget_gone(self) -> None:
        """Close the kept-alive connections to instances the new table no longer has (replaced or removed)."""
        table = self.pruned_for = self.table
        live = {instance for endpoint in table.values() for route in endpoint.deployments.values()
                for instance in route.instances}
        for key in [key for key, upstream in self.upstreams.items() if key not in live and not upstream.in_flight]:
            for _, writer in self.upstreams.pop(key).idle:
                writer.close()

    async def handle(self, scope, receive, send) -> None:
        if self.table is not self.pruned_for:
            self.forget_gone()
        path = scope["path"]
        if not path.startswith(PATH_PREFIX):
            return await respond(send, *_json(404, "Scoring URLs are /endpoints/<workspace>/<endpoint>/score."))
        parts = path[len(PATH_PREFIX):].split("/")
        if len(parts) != 3 or parts[2] not in ("score", "swagger.json"):
            return await respond(send, *_json(404, "Scoring URLs are /endpoints/<workspace>/<endpoint>/score."))
        workspace, name, action = parts
        method = scope["method"]
        if (action == "score" and method != "POST") or (action == "swagger.json" and method != "GET"):
            return await respond(send, *_json(405, f"{action} takes {'POST' if action == 'score' else 'GET'}."))
        endpoint = self.table.get((workspace, name))
        if endpoint is None:
            return await respond(send, *_json(404, f"No endpoint {name[:100]!r} in workspace {workspace[:100]!r}."))
        headers = dict(scope["headers"])
        given = headers.get(b"authorization", b"").decode("latin-1")
        token = given[7:].strip() if given[:7].lower() == "bearer " else ""
        if not token or not any(hmac.compare_digest(token.encode(), key.encode()) for key in endpoint.keys):
            return await respond(send, *_json(401, "Give the endpoint's key: Authorization: Bearer <key>.",
                                              [(b"www-authenticate", b"Bearer")]))
        body, too_big = await read_body(receive)
        if too_big:
            return await respond(send, *_json(413, f"Request bodies are at most {MAX_BODY:,} bytes."))
        wanted = headers.get(b"azureml-model-deployment", b"").decode("latin-1")
        if wanted:
            route = endpoint.deployments.get(wanted)
            if route is None:
                return await respond(send, *_json(404, f"Endpoint {name} has no deployment {wanted[:100]!r}."))
        else:
            route = pick_by_traffic(endpoint)
            if route is None:
                return await respond(send, *_json(503, f"Endpoint {name} has no deployment receiving traffic."))
        request_id = (headers.get(b"x-request-id") or headers.get(b"x-ms-request-id") or b"").decode(
            "latin-1")[:64] or new_request_id()
        # The client's headers reach the script (request_headers, @rawhttp), but not its key nor hop-by-hop ones.
        forwarded = [(b"x-request-id", request_id.encode()),
                     (b"content-type", headers.get(b"content-type", b"application/json"))]
        forwarded += [(n, v) for n, v in scope["headers"] if n not in NOT_FORWARDED]
        instance_path = "/score" if action == "score" else "/swagger.json"
        query = scope.get("query_string", b"")
        if query:
            instance_path += "?" + query.decode("latin-1")
        if action == "score":
            for mirror_name, percent in endpoint.mirror:
                mirror = endpoint.deployments.get(mirror_name)
                if mirror is not None and mirror is not route and random.random() * 100 < percent:
                    task = asyncio.get_running_loop().create_task(self.forward(
                        endpoint, mirror, method, instance_path, forwarded, body, request_id, mirrored=True))
                    self.mirroring.add(task)  # the loop keeps only a weak reference to a task
                    task.add_done_callback(self.mirroring.discard)
                    task.add_done_callback(_ignore)
        payload = ""
        if action == "score" and endpoint.capture_percent and random.random() * 100 < endpoint.capture_percent:
            payload = body[:65536].decode("utf-8", "replace")
        status, response_headers, response_body = await self.forward(
            endpoint, route, method, instance_path, forwarded, body, request_id, payload=payload)
        response_headers = [*(h for h in response_headers if h[0].lower() != b"x-ms-request-id"),
                            (b"azureml-model-deployment", route.name.encode()), (b"x-ms-request-id", request_id.encode())]
        await respond(send, status, response_headers, response_body)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await asyncio.to_thread(self.recorder.flush, everything=True)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        await self.handle(scope, receive, send)


def _ignore(task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("A mirrored request failed", exc_info=task.exception())


def pick_by_traffic(endpoint):
    if not endpoint.traffic:
        return None
    roll = random.random() * sum(percent for _, percent in endpoint.traffic)
    for name, percent in endpoint.traffic:
        roll -= percent
        if roll < 0:
            return endpoint.deployments[name]
    return endpoint.deployments[endpoint.traffic[-1][0]]


async def read_body(receive) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks), False


async def respond(send, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: STUDIO_GATEWAY_PORT (the web port + 1)")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    import django
    import uvicorn
    from django.conf import settings

    django.setup()
    args.port = args.port or settings.STUDIO_GATEWAY_PORT
    gateway = Gateway()
    gateway.start_threads()
    gateway.loaded.wait(timeout=30)
    # Django, uvicorn and the first table are long-lived: the cyclic collector need not walk them again and again
    # (it did on every full collection, about a tenth of the gateway's CPU under load).
    gc.collect()
    gc.freeze()
    print(f"Scoring gateway listening on {args.host}:{args.port}", flush=True)
    # proxy_headers off: the gateway never reads the client's address, and uvicorn's check of X-Forwarded-* parses the
    # peer's IP address on every request.
    uvicorn.run(gateway, host=args.host, port=args.port, log_level="warning", access_log=False,
                http="httptools", loop="uvloop", lifespan="on", timeout_keep_alive=75, proxy_headers=False,
                server_header=False)


if __name__ == "__main__":
    main()
