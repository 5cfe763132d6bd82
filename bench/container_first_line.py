"""Submit to first line of user code in a container, with the environment's image already built.

The Docker twin of submit_to_first_line.py: a Docker compute target on this machine's engine, an environment
(`six==1.16.0`) whose image is built before any timing, and runs submitted one after another through the HTTP
submit form. The script's first line prints `time.time()` (the container's clock is the host's); the figure is
from just before the POST to that time. Target: median of 10 under 2 s.

This module also holds the Docker helpers the other Docker benches import (env_cache_hit.py, build_overhead.py):
`DockerStack` and `post_docker_run`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _services  # noqa: E402

TARGET_SECONDS = 2.0
BASE_IMAGE = "studio/base-python:bookworm"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TARGET_NAME = "docker"
QUEUE = "bench-docker"
FIRST_LINE = re.compile(rb"^BENCH_FIRST_LINE (\S+)$", re.M)
SCRIPT = b"""import time; print("BENCH_FIRST_LINE", repr(time.time()), flush=True)
print("first line ran")
"""


# Shared Docker bench helpers ----------------------------------------------------------------------------------------
class DockerStack(_services.Stack):
    """The bench studio with a Docker target on the local engine.

    Differences from `_services.Stack`: every service and this process get STUDIO_BUILD_DEFAULT_BASE_IMAGE and
    STUDIO_BUILD_CA_BUNDLE (`services.service_env` drops STUDIO_* variables, so they are added after it); the worker
    consumes the target's queue and `builds`; run ids start at a random offset, because container names are
    `studio-run-<id>` on an engine other studios and test suites share, and a fresh database would otherwise start at
    1 and remove their containers (the driver removes a "stale" container of the same name before creating its own).

    On the way out, after the services are stopped: containers of this bench (found by the BENCH_NONCE variable each
    run is given) and the images recorded in `images` are removed; the base image never is.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.nonce = secrets.token_hex(4)  # makes this invocation's definitions, tags and containers its own
        self.images: list[str] = []
        self.target = None
        self.workspace = None

    def _start(self) -> None:
        build_env = {"STUDIO_BUILD_DEFAULT_BASE_IMAGE": BASE_IMAGE, "STUDIO_BUILD_CA_BUNDLE": CA_BUNDLE}
        os.environ.update(build_env)  # read by this process's settings at django.setup() below
        base = self.base
        data_dir = base / "data"
        data_dir.mkdir()
        redis_service, redis_url = _services.services.start_redis(base / "redis")
        self.services.append(redis_service)
        database_url = f"sqlite:///{base / 'bench.sqlite3'}"
        env = _services.services.service_env(database_url=database_url, redis_url=redis_url, data_dir=data_dir)
        env.update(build_env)
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            env=env,
            cwd=_services.ROOT,
            capture_output=True,
            text=True,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"manage.py migrate failed:\n{migrate.stdout}\n{migrate.stderr}")
        for key in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "STUDIO_REDIS_URL", "STUDIO_DATA_DIR"):
            os.environ[key] = env[key]
        import django

        django.setup()
        logging.getLogger("httpx").setLevel(logging.WARNING)
        from django.contrib.auth import get_user_model
        from django.db import connection

        from studio.models import ComputeTarget, Workspace

        user = get_user_model().objects.create_user(_services.USERNAME, password=_services.PASSWORD)
        self.workspace = Workspace.create_with_owner(_services.WORKSPACE, user)
        self.target = self.workspace.compute_targets.create(
            name=TARGET_NAME, kind=ComputeTarget.Kind.DOCKER, docker_url="unix:///var/run/docker.sock", queue=QUEUE
        )
        first_run_id = 100_000_000 + secrets.randbelow(1_000_000_000)
        with connection.cursor() as cursor:  # Django's SQLite tables use AUTOINCREMENT, so this sets the next id
            cursor.execute("UPDATE sqlite_sequence SET seq = %s WHERE name = 'runs_run'", [first_run_id])
            if cursor.rowcount == 0:
                cursor.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('runs_run', %s)", [first_run_id])

        web, self.url = _services.services.start_web(env, base)
        self.services.append(web)
        self.services.append(
            _services.services.start_worker(env, base, queues=f"{QUEUE},builds", concurrency=self.concurrency)
        )
        print(
            f"# services: redis {redis_url}, web {self.url}, worker -c {self.concurrency} on {QUEUE},builds, "
            f"data {base}, bench nonce {self.nonce}",
            flush=True,
        )

    def __exit__(self, *exc_info) -> None:
        try:
            super().__exit__(*exc_info)  # the worker stops first: nothing makes a container after this
        finally:
            self.remove_docker_leftovers()

    def remove_docker_leftovers(self) -> None:
        import docker

        try:
            client = docker.from_env(timeout=120)
        except docker.errors.DockerException as error:
            print(f"# could not reach the engine to clean up: {error}", file=sys.stderr)
            return
        marker = f"BENCH_NONCE={self.nonce}"
        try:
            for container in client.containers.list(all=True, filters={"label": "studio.run", "name": "studio-"}):
                with contextlib.suppress(docker.errors.NotFound):
                    if marker in (container.attrs.get("Config", {}).get("Env") or []):
                        container.remove(force=True)
                        print(f"# removed leftover container {container.name}", file=sys.stderr)
            for name in self.images:
                if name.split(":")[0] == BASE_IMAGE.split(":")[0]:
                    continue  # never the base image
                try:
                    client.images.remove(name, force=True)
                except docker.errors.ImageNotFound:
                    pass
                except docker.errors.DockerException as error:
                    print(f"# could not remove image {name}: {error}", file=sys.stderr)
        finally:
            client.close()

    def run_env_vars(self, extra: str = "") -> str:
        """The form's environment variables: the bench's marker (so clean-up finds its containers) and `extra`."""
        return f"BENCH_NONCE={self.nonce}\n{extra}".strip()

    def build_environment(self, name: str, *, packages: str = "", steps: str = "", base_dockerfile: str = ""):
        """A system-managed environment saved through the model, and its image built here, synchronously.

        Returns (environment, image, seconds of `builds.build`); raises when the build failed.
        """
        from environments import builds
        from environments.models import BuildStatus, Environment, EnvironmentKind

        environment = Environment(
            workspace=self.workspace,
            name=name,
            kind=EnvironmentKind.SYSTEM_MANAGED,
            python_packages=packages,
            dockerfile_steps=steps,
            base_dockerfile=base_dockerfile,
        ).save_new_version()
        image = builds.ensure_image(environment, enqueue=False)
        self.images.append(image.name)
        started = time.perf_counter()
        builds.build(image.pk)
        seconds = time.perf_counter() - started
        image.refresh_from_db()
        if image.status != BuildStatus.SUCCEEDED:
            raise RuntimeError(f"build of {image.name} ended {image.status}: {image.error[-3000:]}")
        return environment, image, seconds


def post_docker_run(
    stack: DockerStack, client, token: str, source: bytes, *, experiment: str, environment: str, env_vars: str = ""
) -> int:
    """POST the submit form for the Docker target with a named environment; returns the run id from the redirect."""
    response = client.post(
        f"/w/{_services.WORKSPACE}/runs/new/",
        data={
            "csrfmiddlewaretoken": token,
            "experiment": experiment,
            "entry_script": "",
            "arguments": "",
            "env_vars": stack.run_env_vars(env_vars),
            "compute_target": TARGET_NAME,
            "environment": environment,
            "packages": "",
            "max_duration_seconds": "120",
            "display_name": "",
            "tags": "",
        },
        files={"source": ("bench.py", source, "text/x-python")},
    )
    if response.status_code != 302:
        raise RuntimeError(f"submit failed: HTTP {response.status_code}\n{response.text[:2000]}")
    match = re.search(r"/runs/(\d+)/$", response.headers["location"])
    if match is None:
        raise RuntimeError(f"unexpected redirect after submit: {response.headers['location']}")
    return int(match.group(1))


def console_log(run_id: int) -> bytes:
    from runs import storage

    path = storage.console_log_path(run_id)
    return path.read_bytes() if path.exists() else b""


# This bench ---------------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (service logs, database)")
    args = parser.parse_args()
    print(_services.reproduce_line("container_first_line.py", sys.argv[1:]), flush=True)

    results = []
    with DockerStack(concurrency=args.concurrency, keep=args.keep) as stack:
        # A step unique to this invocation gives it an image of its own: identical definitions share
        # `studio/env_<hash>` on a shared engine, and this bench removes what it built.
        environment, image, seconds = stack.build_environment(
            "bench-first-line", packages="six==1.16.0", steps=f"RUN echo container-first-line-{stack.nonce}"
        )
        print(f"# built {image.name} in {seconds:.1f} s (before any timing)", flush=True)
        client = stack.client()
        token = stack.submit_form_token(client)
        print(f"{'#':>3} {'total':>7} {'POST':>7} {'queued':>7} {'prepare':>8} {'launch':>7} {'python':>7}  (seconds)")
        for index in range(-args.warmup, args.runs):
            started = time.time()
            run_id = post_docker_run(
                stack, client, token, SCRIPT, experiment="container-first-line", environment=environment.name
            )
            posted = time.time()
            run = stack.wait_final(run_id)
            found = FIRST_LINE.search(console_log(run_id))
            if run.status != "Completed" or found is None:
                raise RuntimeError(f"run {run_id} ended {run.status}: {run.reason}\n{stack.log('worker')}")
            first_line = float(found.group(1))
            t = _services.status_times(run_id)
            total = first_line - started
            row = (
                f"{'w' if index < 0 else index + 1:>3} {total:7.3f} {posted - started:7.3f} "
                f"{t['Preparing'] - t['Queued']:7.3f} {t['Starting'] - t['Preparing']:8.3f} "
                f"{t['Running'] - t['Starting']:7.3f} {first_line - t['Running']:7.3f}"
            )
            print(row + ("  (warm-up, not counted)" if index < 0 else ""), flush=True)
            if index >= 0:
                results.append(total)

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
