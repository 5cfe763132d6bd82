"""The process's one background sender: an ordered queue, a daemon thread that empties it in batches, and flush.

The script's threads only append to a `collections.deque` (atomic, no lock): a scalar point is the tuple
`(run_id, name, description, step, value, time)`, anything else an `Op`. The sender thread wakes every POLL
seconds and sends when 50,000 points are waiting, when the oldest waiting record is 0.5 s old, or when someone
flushes. A batch is the longest stretch of points, entries and tags (up to 50,000 points) before the next image,
file, status or flush marker; it becomes, per run and in first-seen order, one metrics request (split further if
it would pass MAX_BODY), one entries request, one tags request and one parameters request. So the requests for one run reach the server in
the order the script made the calls.

Each series travels as columns packed in binary (`packed`: base64 of little-endian float64 steps, values and times,
a NaN step meaning "the next one"): no JSON number is written per point here, and none is parsed on the server.

Failures never reach the script: see `_deliver`.
"""

from __future__ import annotations

import array
import base64
import json
import os
import sys
import threading
import time
from collections import deque

from studio_sdk import _http
from studio_sdk._values import json_cell

BATCH_POINTS = 50_000
UNDELIVERED_PREFIX = "undelivered:"
MAX_AGE = 0.5
POLL = 0.05
MAX_BODY = 8_000_000
NAN = float("nan")
EXIT_GRACE = 5.0

# Indexes into a point tuple.
RUN, NAME, DESCRIPTION, STEP, VALUE, TIME = range(6)


class Op:
    """A queued record that is not a scalar point. `kind` is entries, tags, params, image, file, status or flush."""

    __slots__ = ("kind", "run_id", "payload", "time", "done")

    def __init__(self, kind: str, run_id, payload=None):
        self.kind = kind
        self.run_id = run_id
        self.payload = payload
        self.time = time.time()
        self.done = threading.Event() if kind == "flush" else None

    @property
    def batchable(self) -> bool:
        return self.kind in ("entries", "tags", "params")

    def __len__(self) -> int:  # how many records this op stands for, in messages about dropped data
        return len(self.payload) if self.kind == "entries" else 1


def _strict_json(payload) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def _warn(message: str) -> None:
    try:
        print(f"studio_sdk: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed at interpreter exit: nobody left to tell
        return


class Sender:
    def __init__(self, endpoint: _http.Endpoint, give_up: float):
        self.endpoint = endpoint
        self.give_up = give_up
        self.queue: deque = deque()
        self.append = self.queue.append
        self._connection = _http.Connection(endpoint, timeout=min(max(give_up, 5.0), 30.0))
        self._unreachable = False  # after one batch gave up, later ones get one attempt each until one succeeds
        self._dropped_quietly = 0
        self.undelivered_points = 0
        self.undelivered_records = 0
        self.last_problem = ""
        self._reported: set = set()
        self._closed = False
        self._reset_threading()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    # The script's side --------------------------------------------------------------------------------------
    def put(self, op: Op) -> None:
        self.append(op)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything queued before this call was sent (or given up on); False on timeout."""
        if threading.current_thread() is self._thread:
            return False
        marker = Op("flush", None)
        with self._lock:
            self._pending_flushes += 1
            self.append(marker)
            self._ensure_thread()
        self._wake.set()
        done = marker.done.wait(timeout)
        if not done:
            _warn(f"flush timed out after {timeout} s with {len(self.queue)} records still queued.")
        return done

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush, then stop the thread (tests; the exit hook). Records appended later are ignored."""
        done = self.flush(timeout)
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        self._connection.close()
        return done

    def at_exit(self) -> None:
        if self._closed:
            return
        try:
            self.flush(timeout=self.give_up + EXIT_GRACE)
        except RuntimeError as exc:  # e.g. no new thread can start this late in the interpreter's shutdown
            _warn(f"could not flush at exit ({exc}); {len(self.queue)} records were not sent.")
        if self._dropped_quietly:
            _warn(f"{self._dropped_quietly} more records were dropped while the studio was unreachable.")
            self._dropped_quietly = 0
        if self.undelivered_points or self.undelivered_records:
            # The run's worker reads this line from the console and puts it in the run's reason: a run whose
            # metrics did not arrive is never a silent success.
            _warn(f"{UNDELIVERED_PREFIX} {self.undelivered_points} metric points and {self.undelivered_records} other "
                  f"records could not be delivered to the studio ({self.last_problem}).")

    # Thread management ----------------------------------------------------------------------------------------
    def _reset_threading(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending_flushes = 0
        self._thread: threading.Thread | None = None
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="studio-sdk-sender", daemon=True)
            self._thread.start()

    def _after_fork(self) -> None:
        """A forked child starts with its own empty queue and thread; the parent's records stay the parent's."""
        if self._closed:
            return
        self.queue.clear()
        self._connection.forget()
        self._reset_threading()

    # The sender thread ----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closed:
            try:
                if self._ready():
                    self._send_batch()
                else:
                    self._wake.wait(POLL)
                    self._wake.clear()
            except Exception as exc:  # a bug here must not stop the thread: tell once and carry on
                self._report_once(("bug", type(exc).__name__), f"internal error in the sender: {exc!r}")
                time.sleep(POLL)

    def _ready(self) -> bool:
        queue = self.queue
        if not queue:
            return False
        if self._pending_flushes or len(queue) >= BATCH_POINTS:
            return True
        first = queue[0]
        first_time = first[TIME] if type(first) is tuple else first.time
        return time.time() - first_time >= MAX_AGE

    def _send_batch(self) -> None:
        """Take one batch from the front of the queue and send it, or handle the one op at the front."""
        queue = self.queue
        popleft = queue.popleft
        runs: dict = {}  # run_id -> {"series": {name: series}, "entries": [...], "tags": {...}, "params": {...}}
        points = 0
        while points < BATCH_POINTS and queue:
            item = queue[0]
            if type(item) is tuple:
                # A stretch of points: taken off the queue in a tight loop, then turned into columns per series.
                groups: dict = {}
                while points < BATCH_POINTS and queue and type(queue[0]) is tuple:
                    item = popleft()
                    groups.setdefault((item[RUN], item[NAME]), []).append(item)
                    points += 1
                for (run_id, name), group in groups.items():
                    per_run = runs.setdefault(run_id, _per_run())
                    series = per_run["series"].get(name)
                    if series is None:
                        series = per_run["series"][name] = Columns(name)
                    series.add(group)
            elif item.batchable:
                popleft()
                per_run = runs.setdefault(item.run_id, _per_run())
                if item.kind == "entries":
                    per_run["entries"].extend(item.payload)
                    points += len(item.payload)
                else:
                    per_run[item.kind].update(item.payload)
            else:
                if not runs:
                    popleft()
                    self._handle(item)
                break
        for run_id, per_run in runs.items():
            if per_run["series"]:
                self._send_metrics(run_id, list(per_run["series"].values()))
            if per_run["entries"]:
                self._send_entries(run_id, per_run["entries"])
            if per_run["tags"]:
                self._deliver(f"tags of run {run_id}", 1, f"/api/v1/runs/{run_id}/tags", _strict_json({"tags": per_run["tags"]}))
            if per_run["params"]:
                self._deliver(f"parameters of run {run_id}", 1, f"/api/v1/runs/{run_id}/parameters",
                              _strict_json({"parameters": per_run["params"]}))

    def _handle(self, op: Op) -> None:
        path = f"/api/v1/runs/{op.run_id}"
        if op.kind == "flush":
            with self._lock:
                self._pending_flushes -= 1
            op.done.set()
        elif op.kind == "status":
            self._deliver(f"the status of run {op.run_id}", 1, f"{path}/status", _strict_json(op.payload))
        elif op.kind in ("image", "file"):
            name, filename, content, content_type = op.payload
            body, multipart_type = _http.multipart({"name": name}, filename, content, content_type)
            self._deliver(f"{op.kind} {name!r} of run {op.run_id}", 1, f"{path}/{op.kind}s", body, multipart_type)

    def _send_metrics(self, run_id, series: list) -> None:
        count = sum(len(s) for s in series)
        body = _strict_json({"series": [s.packed() for s in series]})
        if len(body) > MAX_BODY and count > 1:
            for half in _halves(series):
                self._send_metrics(run_id, half)
            return
        self._deliver(f"metrics of run {run_id}", count, f"/api/v1/runs/{run_id}/metrics", body)

    def _send_entries(self, run_id, entries: list) -> None:
        encoded = [{**e, "data": _encode_data(e["data"])} for e in entries]
        body = _strict_json({"entries": encoded})
        if len(body) > MAX_BODY:
            if len(entries) > 1:
                middle = len(entries) // 2
                self._send_entries(run_id, entries[:middle])
                self._send_entries(run_id, entries[middle:])
            else:
                self._report_once(
                    ("too-big", entries[0]["name"]),
                    f"{entries[0]['kind']} {entries[0]['name']!r} of run {run_id} is {len(body) // 1000} kB as JSON, "
                    f"more than the studio's 2 MB per request; it was not sent. Log it in parts or upload it as a file.",
                )
            return
        self._deliver(f"entries of run {run_id}", len(entries), f"/api/v1/runs/{run_id}/entries", body)

    def _deliver(self, what: str, count: int, path: str, body: bytes, content_type: str = "application/json") -> None:
        """Send one request, retrying as _http.with_retries does; on failure tell stderr and drop the batch."""
        give_up = 0.0 if self._unreachable else self.give_up
        try:
            response = _http.with_retries(lambda: self._connection.send("POST", path, body, content_type), give_up)
        except _http.Unavailable as exc:
            self._count_undelivered(path, count, f"the studio at {self.endpoint.base_url} could not be reached")
            if self._unreachable:
                self._dropped_quietly += count
            else:
                self._unreachable = True
                _warn(
                    f"could not reach the studio at {self.endpoint.base_url} for {self.give_up:g} s ({exc}); "
                    f"dropped {what} ({count} records). Further failures are counted, not shown."
                )
            return
        self._unreachable = False
        if not response.ok:
            message = response.message()
            self._count_undelivered(path, count, f"the studio refused them: HTTP {response.status}: {message}")
            self._report_once(
                (path.rsplit("/", 1)[-1], response.status, message),
                f"the studio refused {what} ({count} records dropped): HTTP {response.status}: {message}",
            )

    def _count_undelivered(self, path: str, count: int, problem: str) -> None:
        if path.endswith("/metrics"):
            self.undelivered_points += count
        else:
            self.undelivered_records += count
        self.last_problem = problem[:300]

    def _report_once(self, key, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            _warn(message + " (shown once)")


def _per_run() -> dict:
    return {"series": {}, "entries": [], "tags": {}, "params": {}}


class Columns:
    """One series' points of a batch, as three columns of floats."""

    __slots__ = ("name", "description", "steps", "values", "times")

    def __init__(self, name: str, description: str = ""):
        self.name, self.description = name, description
        self.steps: list = []
        self.values: list = []
        self.times: list = []

    def __len__(self) -> int:
        return len(self.values)

    def add(self, points: list[tuple]) -> None:
        """Append point tuples (run, name, description, step, value, time) of this series."""
        self.steps.extend([NAN if p[STEP] is None else p[STEP] for p in points])
        self.values.extend([p[VALUE] for p in points])
        self.times.extend([p[TIME] for p in points])
        described = [p[DESCRIPTION] for p in points if p[DESCRIPTION]]
        if described:
            self.description = described[-1]

    def part(self, start: int, stop: int) -> Columns:
        part = Columns(self.name, self.description)
        part.steps, part.values, part.times = self.steps[start:stop], self.values[start:stop], self.times[start:stop]
        return part

    def packed(self) -> dict:
        raw = array.array("d", self.steps)
        raw.extend(array.array("d", self.values))
        raw.extend(array.array("d", self.times))
        if sys.byteorder != "little":
            raw.byteswap()
        payload = {"name": self.name, "count": len(self.values), "packed": base64.b64encode(raw.tobytes()).decode()}
        if self.description:
            payload["description"] = self.description
        return payload


def _halves(series: list) -> list:
    """Split a list of series into two lists with about half the points each."""
    if len(series) > 1:
        middle = len(series) // 2
        return [series[:middle], series[middle:]]
    only = series[0]
    middle = len(only) // 2
    return [[only.part(0, middle)], [only.part(middle, len(only))]]


def _encode_data(data):
    if isinstance(data, list):
        return [json_cell(v) for v in data]
    return {k: [json_cell(v) for v in v] if isinstance(v, list) else json_cell(v) for k, v in data.items()}
