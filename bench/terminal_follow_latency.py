"""Console line latency in a terminal: a script prints 1,000 lines, one every 5 ms, each carrying `time.time()` at
print; the client SDK follows the run as `run.wait_for_completion(show_output=True)` and `studio run logs -f` do
(`studio_sdk.experiment.follow_console`, server-sent events over the REST API with a personal token), writing into a
stream that stamps each line as it arrives. Latency of a line = time written to the terminal - time it was printed.

Both followers run at once against one run: the SDK in this process's thread, and the real `studio run logs -f`
command in a subprocess whose stdout the bench reads. Target: p95 under 50 ms.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sdk"))

import _services  # noqa: E402

TARGET_P95_SECONDS = 0.05
SCRIPT_TEMPLATE = """import time
time.sleep(1.0)
for i in range({lines}):
    print(f"bench-line {{i}} {{time.time():.6f}}", flush=True)
    time.sleep({interval})
"""


class Stamped:
    """A text stream that notes when each bench line reached it."""

    def __init__(self):
        self.latencies: dict[int, float] = {}
        self.buffer = ""

    def write(self, text: str) -> int:
        now = time.time()
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "bench-line":
                self.latencies[int(parts[1])] = now - float(parts[2])
        return len(text)

    def flush(self) -> None:
        pass


def summary(name: str, latencies: dict[int, float], expected: int) -> str:
    values = list(latencies.values())
    if not values:
        return f"{name}: no lines received: FAIL"
    p50, p95, worst = (_services.percentile(values, 50), _services.percentile(values, 95), max(values))
    verdict = "PASS" if p95 < TARGET_P95_SECONDS and len(values) == expected else "FAIL"
    return (f"{name}: received {len(values)}/{expected} lines, p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
            f"max {worst * 1000:.1f} ms; target p95 < {TARGET_P95_SECONDS * 1000:.0f} ms: {verdict}")


def main() -> int:
    parser = _services.parser(__doc__)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.005, help="seconds between printed lines")
    args = _services.parse(parser)

    from studio_sdk import Workspace
    from studio_sdk.experiment import RemoteRun, follow_console

    script = SCRIPT_TEMPLATE.format(lines=args.lines, interval=args.interval).encode()
    with _services.Stack(concurrency=args.concurrency, keep=args.keep) as stack:
        from studio.models import ApiToken

        token = ApiToken.issue(stack.user, "bench")[1]
        ws = Workspace(stack.url, _services.WORKSPACE, token)
        client = stack.client()
        run_id = stack.post_run(client, stack.submit_form_token(client), script, experiment="terminal-latency")
        sdk_stream = Stamped()
        follower = threading.Thread(target=follow_console, args=(RemoteRun(ws, run_id), sdk_stream), daemon=True)
        follower.start()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "sdk"),
               "STUDIO_TOKEN": token, "PYTHONUNBUFFERED": "1"}
        cli = subprocess.Popen([sys.executable, "-m", "studio_sdk.cli", "--url", stack.url, "-w", _services.WORKSPACE,
                                "run", "logs", "-f", str(run_id)], stdout=subprocess.PIPE, env=env, text=True,
                               bufsize=1)
        cli_stream = Stamped()
        for line in cli.stdout:
            cli_stream.write(line)
        code = cli.wait()
        follower.join(timeout=60)
        run = stack.wait_final(run_id)
        if run.status != "Completed":
            raise RuntimeError(f"run {run_id} ended {run.status}: {run.reason}")
    print(summary("SDK wait_for_completion(show_output=True)", sdk_stream.latencies, args.lines))
    print(summary(f"studio run logs -f (exit code {code})", cli_stream.latencies, args.lines))
    ok = all(len(s.latencies) == args.lines and _services.percentile(list(s.latencies.values()), 95)
             < TARGET_P95_SECONDS for s in (sdk_stream, cli_stream))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
