"""Environment cache hit: an identical definition under another name finds the built image, with no build.

One environment's image is built first (packages `six==1.16.0`, plus a step unique to this invocation so the image
is this bench's own on a shared engine). A second environment with the identical definition is saved under another
name, and runs using it are submitted one after another to a Docker target through the HTTP submit form.

Studio time per run = the submit POST round trip + (its `Starting` status time - its `Preparing` status time): what the
studio does to accept the run, decide that the definition's image is cached and get to launching the container. The
broker hand-off (Queued -> Preparing) and Docker's own container start (Starting -> Running and later) are left out.
Target: every run under 100 ms, zero builds (the image's build count unchanged, one image row for the hash).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _services  # noqa: E402

TARGET_MS = 100.0
PACKAGES = "six==1.16.0"
SCRIPT = b"""import six
print("six", six.__version__)
"""


def main() -> int:
    parser = _services.parser(__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1, help="runs before the counted ones (web server warm-up)")
    args = _services.parse(parser)

    studio_ms, posts_ms = [], []
    with _services.DockerStack(concurrency=args.concurrency, keep=args.keep) as stack:
        from environments.models import Environment, EnvironmentImage

        steps = f"RUN echo env-cache-hit-{stack.nonce}"
        first, image, seconds = stack.build_environment("bench-cache-a", packages=PACKAGES, steps=steps)
        builds_before, started_before = image.build_count, image.started_at
        print(f"# built {image.name} for bench-cache-a in {seconds:.1f} s; build count {builds_before}", flush=True)
        second = Environment(
            workspace=stack.workspace,
            name="bench-cache-b",
            kind=first.kind,
            python_packages=PACKAGES,
            dockerfile_steps=steps,
        ).save_new_version()
        if second.definition_hash != first.definition_hash:
            raise RuntimeError("the two definitions hash differently: the bench is wrong, not the cache")

        client = stack.client()
        token = stack.submit_form_token(client)
        print(f"{'#':>3} {'studio':>8} {'POST':>7} {'prepare':>8} | {'queued':>7} {'launch':>7}  (ms)")
        for index in range(-args.warmup, args.runs):
            started = time.perf_counter()
            run_id = _services.post_docker_run(
                stack, client, token, SCRIPT, experiment="env-cache-hit", environment=second.name
            )
            post_ms = (time.perf_counter() - started) * 1000
            run = stack.wait_final(run_id)
            if run.status != "Completed" or run.environment_id != second.pk:
                raise RuntimeError(f"run {run_id} ended {run.status}: {run.reason}\n{stack.log('worker')}")
            t = _services.status_times(run_id)
            prepare_ms = (t["Starting"] - t["Preparing"]) * 1000
            total_ms = post_ms + prepare_ms
            print(
                f"{'w' if index < 0 else index + 1:>3} {total_ms:8.1f} {post_ms:7.1f} {prepare_ms:8.1f} | "
                f"{(t['Preparing'] - t['Queued']) * 1000:7.1f} {(t['Running'] - t['Starting']) * 1000:7.1f}"
                + ("  (warm-up, not counted)" if index < 0 else ""),
                flush=True,
            )
            if index >= 0:
                studio_ms.append(total_ms)
                posts_ms.append(post_ms)

        image.refresh_from_db()
        builds_after = image.build_count
        rebuilt = image.started_at != started_before
        rows = EnvironmentImage.objects.filter(definition_hash=first.definition_hash).count()

    median, worst = statistics.median(studio_ms), max(studio_ms)
    zero_builds = builds_after == builds_before and not rebuilt and rows == 1
    verdict = "PASS" if worst < TARGET_MS and zero_builds else "FAIL"
    print(
        "columns: studio = POST + prepare; POST = HTTP round trip of the submit form; prepare = Preparing -> Starting "
        "(snapshot unpacked, image looked up by definition hash); not counted: queued = Queued -> Preparing (broker "
        "delivery + claim), launch = Starting -> Running (container created, workspace copied in, started)"
    )
    print(
        f"env cache hit over {len(studio_ms)} runs: studio time median {median:.1f} ms, max {worst:.1f} ms "
        f"(POST median {statistics.median(posts_ms):.1f} ms); image build count {builds_before} before, "
        f"{builds_after} after ({builds_after - builds_before} builds), {rows} image row for the hash; "
        f"target every run < {TARGET_MS:.0f} ms and zero builds: {verdict}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
