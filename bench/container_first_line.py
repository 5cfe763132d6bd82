"""Submit to first line of user code in a container, with the environment's image already built.

The Docker twin of submit_to_first_line.py: a Docker compute target on this machine's engine, an environment
(`six==1.16.0`) whose image is built before any timing, and runs submitted one after another through the HTTP
submit form. The script's first line prints `time.time()` (the container's clock is the host's); the figure is
from just before the POST to that time. Target: median of 10 under 2 s.

The Docker stack (`_services.DockerStack`) is shared with env_cache_hit.py and build_overhead.py.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _services  # noqa: E402

TARGET_SECONDS = 2.0
FIRST_LINE = re.compile(rb"^BENCH_FIRST_LINE (\S+)$", re.M)
SCRIPT = b"""import time; print("BENCH_FIRST_LINE", repr(time.time()), flush=True)
print("first line ran")
"""


def main() -> int:
    parser = _services.parser(__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    args = _services.parse(parser)

    with _services.DockerStack(concurrency=args.concurrency, keep=args.keep) as stack:
        # A step unique to this invocation gives it an image of its own: identical definitions share
        # `studio/env_<hash>` on a shared engine, and this bench removes what it built.
        environment, image, seconds = stack.build_environment(
            "bench-first-line", packages="six==1.16.0", steps=f"RUN echo container-first-line-{stack.nonce}"
        )
        print(f"# built {image.name} in {seconds:.1f} s (before any timing)", flush=True)
        client = stack.client()
        token = stack.submit_form_token(client)

        def submit(index: int) -> int:
            return _services.post_docker_run(
                stack, client, token, SCRIPT, experiment="container-first-line", environment=environment.name
            )

        def first_line(index: int, run_id: int) -> float | None:
            found = FIRST_LINE.search(_services.console_log(run_id))
            return float(found.group(1)) if found else None

        results = _services.first_line_runs(
            stack, warmup=args.warmup, runs=args.runs, submit=submit, first_line=first_line, launch="launch"
        )

    median = statistics.median(results)
    p90 = _services.percentile(results, 90)
    worst = max(results)
    verdict = "PASS" if median < TARGET_SECONDS else "FAIL"
    print(
        "columns: total = POST start -> first line of the script in the container; POST = HTTP round trip of the "
        "submit form; queued = Queued -> Preparing (broker delivery + claim); prepare = Preparing -> Starting "
        "(snapshot unpacked, cached image found); launch = Starting -> Running (container created, workspace copied "
        "in, attached, started); python = Running recorded -> first line (container start + interpreter)"
    )
    print(
        f"container submit -> first line (cached image) over {len(results)} runs: median {median:.3f} s, "
        f"p90 {p90:.3f} s, max {worst:.3f} s; target median < {TARGET_SECONDS:.0f} s: {verdict}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
