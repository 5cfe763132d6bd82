"""Console line latency over server-sent events: a script prints 1,000 lines, one every 5 ms, each carrying
`time.time()` at print; a signed-in HTTP client reads the run's SSE endpoint (`/w/<ws>/runs/<id>/events/`) the way
the run page does. Latency of a line = time it was received by the client - time it was printed.

The client connects right after the submit form's redirect, before the script starts. Target: p95 under 1 s.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _services  # noqa: E402

TARGET_P95_SECONDS = 1.0
SCRIPT_TEMPLATE = """import time
for i in range({lines}):
    print(f"bench-line {{i}} {{time.time():.6f}}", flush=True)
    time.sleep({interval})
"""


def read_events(response):
    """(event, data, received_at) for each SSE message, as it arrives."""
    event, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield event, "\n".join(data), time.time()
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)


def main() -> int:
    parser = _services.parser(__doc__)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.005, help="seconds between printed lines")
    args = _services.parse(parser)

    script = SCRIPT_TEMPLATE.format(lines=args.lines, interval=args.interval).encode()
    latencies: dict[int, float] = {}
    events = {"log": 0, "status": 0}
    with _services.Stack(concurrency=args.concurrency, keep=args.keep) as stack:
        client = stack.client()
        token = stack.submit_form_token(client)
        run_id = stack.post_run(client, token, script, experiment="sse-latency")
        url = f"/w/{_services.WORKSPACE}/runs/{run_id}/events/"
        with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
            if response.status_code != 200:
                raise RuntimeError(f"SSE endpoint answered HTTP {response.status_code}")
            for event, data, received in read_events(response):
                if event == "end":
                    break
                if event in events:
                    events[event] += 1
                if event != "log":
                    continue
                for _source, text in json.loads(data)["lines"]:
                    parts = text.split()
                    if len(parts) == 3 and parts[0] == "bench-line":
                        latencies[int(parts[1])] = received - float(parts[2])
        run = stack.wait_final(run_id)
        if run.status != "Completed":
            raise RuntimeError(f"run {run_id} ended {run.status}: {run.reason}")

    values = list(latencies.values())
    if not values:
        print("no lines received: FAIL")
        return 1
    p50 = _services.percentile(values, 50)
    p95 = _services.percentile(values, 95)
    worst = max(values)
    verdict = "PASS" if p95 < TARGET_P95_SECONDS and len(values) == args.lines else "FAIL"
    print(f"# {events['log']} log events and {events['status']} status events carried the lines")
    print(
        f"SSE line latency: received {len(values)}/{args.lines} lines, p50 {p50 * 1000:.1f} ms, "
        f"p95 {p95 * 1000:.1f} ms, max {worst * 1000:.1f} ms; target p95 < {TARGET_P95_SECONDS:.0f} s: {verdict}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
