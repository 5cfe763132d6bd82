"""Shared setup for the benchmarks: a throwaway studio (Redis, migrated SQLite, Celery worker, uvicorn) and
signed-in HTTP clients; its Docker variant (`DockerStack`); its endpoints variant (`EndpointStack`: the scoring
gateway and the endpoints' controller); an in-process Django on a throwaway database with bulk runs
(`django_in_process`, `bench_experiment`, `bulk_runs`); and the pieces of the benches' command lines and timing loops
that they share.

`Stack` is a context manager: whatever happens inside (an exception, Ctrl-C, SIGTERM), every process it started
is stopped on the way out, and the temporary folder removed (kept with `keep=True`, or after a failure so its
service logs and database can be read).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import services  # noqa: E402  (after the sys.path fix: run as a script from anywhere)

USERNAME = "bench"
PASSWORD = "bench-password-not-secret-7"
WORKSPACE = "bench"
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
RUN_REDIRECT = re.compile(r"/runs/(\d+)/$")
DJANGO_KEYS = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "STUDIO_REDIS_URL", "STUDIO_DATA_DIR")

# The Docker benches' target on this machine's engine.
BASE_IMAGE = "studio/base-python:bookworm"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DOCKER_TARGET = "docker"
DOCKER_QUEUE = "bench-docker"


# Command line and figures --------------------------------------------------------------------------------------------
def reproduce_line(script: str, argv: list[str]) -> str:
    """The command that reproduces this run, for the top of the output."""
    return f"$ cd {ROOT} && .venv/bin/python bench/{script} {shlex.join(argv)}".rstrip()


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser that shows the bench's docstring as its help."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse(arguments: argparse.ArgumentParser, *, concurrency: bool = True, keep: str = "") -> argparse.Namespace:
    """Add the common options (--concurrency, --keep), parse, and print the reproducing command line."""
    if concurrency:
        arguments.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    keep_help = keep or "keep the temporary folder (service logs, database)"
    arguments.add_argument("--keep", action="store_true", help=keep_help)
    args = arguments.parse_args()
    print(reproduce_line(arguments.prog, sys.argv[1:]), flush=True)
    return args


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): always one of the measured values."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def status_times(run_id: int) -> dict[str, float]:
    """Epoch seconds of each status change of a run."""
    from runs.models import RunStatusChange

    return {c.status: c.at.timestamp() for c in RunStatusChange.objects.filter(run_id=run_id)}


def now() -> float:
    """Epoch seconds."""
    return time.time()


def first_line_runs(stack: Stack, *, warmup: int, runs: int, submit, first_line, launch: str) -> list[float]:
    """Submit runs one after another (warm-ups first) and print a row of timings for each.

    `submit(index)` posts a run and returns its id; `first_line(index, run_id)` is the epoch time the script's first
    line ran, or None when it left no trace. `launch` names the Starting -> Running column. Returns the totals (POST
    start -> first line) of the counted runs.
    """
    print(f"{'#':>3} {'total':>7} {'POST':>7} {'queued':>7} {'prepare':>8} {launch:>7} {'python':>7}  (seconds)")
    results = []
    for index in range(-warmup, runs):
        started = time.time()
        run_id = submit(index)
        posted = time.time()
        run = stack.wait_final(run_id)
        at = first_line(index, run_id)
        if run.status != "Completed" or at is None:
            raise RuntimeError(f"run {run_id} ended {run.status}: {run.reason}\n{stack.log('worker')}")
        t = status_times(run_id)
        row = (
            f"{'w' if index < 0 else index + 1:>3} {at - started:7.3f} {posted - started:7.3f} "
            f"{t['Preparing'] - t['Queued']:7.3f} {t['Starting'] - t['Preparing']:8.3f} "
            f"{t['Running'] - t['Starting']:7.3f} {at - t['Running']:7.3f}"
        )
        print(row + ("  (warm-up, not counted)" if index < 0 else ""), flush=True)
        if index >= 0:
            results.append(at - started)
    return results


# Processes -----------------------------------------------------------------------------------------------------------
def group_cpu_seconds(group: int) -> float:
    """CPU time (user + system) used so far by the processes of process group `group` that are still alive."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # fields after the name: state, ppid, pgrp, ..., utime (12), stime (13)
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def wait_settled(group: int, timeout: float = 60, quiet: float = 0.05) -> float:
    """Wait until the processes of `group` use under `quiet` of a core over a second (a server whose other workers
    are still starting after the first answered would load the machine during the first measurements); the seconds
    waited."""
    started = time.monotonic()
    before = group_cpu_seconds(group)
    while time.monotonic() - started < timeout:
        time.sleep(1)
        now = group_cpu_seconds(group)
        if now - before < quiet:
            break
        before = now
    return time.monotonic() - started


def _raise_on_sigterm(signum, frame):
    """Turn SIGTERM into SystemExit, so the stack's clean-up runs."""
    raise SystemExit(f"stopped by signal {signum}")


def _stop(service: services.Service) -> None:
    """Stop a service, then anything left in its process group (prefork children of Celery, for one)."""
    pgid = service.process.pid  # each service is started in its own session, so its pid is its group id
    try:
        service.stop()
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
            os.killpg(pgid, signal.SIGKILL)


class ChildService(services.Service):
    """A `tests/services.Service` (own session, log file, `stop()`) started in `cwd` instead of the repository."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path):
        self.name = name
        self.log_path = cwd / f"{name}.log"
        self.process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True
        )


def migrate(env: dict[str, str]) -> None:
    """`manage.py migrate` of the database in `env`; raises with its output when it fails."""
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py migrate failed:\n{done.stdout}\n{done.stderr}")


def setup_django(env: dict[str, str]) -> None:
    """Django in this process, on the same database, data dir and Redis as the services."""
    for key in DJANGO_KEYS:
        os.environ[key] = env[key]
    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the studio's logging config prints every request


# The throwaway studio ------------------------------------------------------------------------------------------------
class Stack:
    """Redis + migrated SQLite + uvicorn (+ a Celery worker unless `worker=False`) in a temporary folder, Django set
    up in-process, and the bench user (`user`) with its workspace (`workspace`)."""

    queues = "studio,local,builds"  # tests/services.start_worker's default

    def __init__(self, *, concurrency: int = 2, keep: bool = False, worker: bool = True):
        self.concurrency = concurrency
        self.keep = keep
        self.worker = worker
        self.services: list[services.Service] = []
        self.base: Path | None = None
        self.url = ""
        self.user = None
        self.workspace = None
        self.env: dict[str, str] = {}  # the services' environment

    def __enter__(self) -> Stack:
        signal.signal(signal.SIGTERM, _raise_on_sigterm)
        self.base = Path(tempfile.mkdtemp(prefix="studio-bench-"))
        try:
            self._start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def extra_env(self) -> dict[str, str]:
        """Variables added to every service's environment and this process's (after `services.service_env`)."""
        return {}

    def _start(self) -> None:
        """Redis, the migrated database, Django in here, the bench's rows, uvicorn and the worker."""
        self.base.chmod(0o711)  # local runs execute as users of their own, who reach their folder through here
        data_dir = self.base / "data"
        data_dir.mkdir()
        data_dir.chmod(0o711)
        redis_service, redis_url = services.start_redis(self.base / "redis")
        self.services.append(redis_service)
        database_url = f"sqlite:///{self.base / 'bench.sqlite3'}"
        env = services.service_env(database_url=database_url, redis_url=redis_url, data_dir=data_dir)
        env.update(self.extra_env())
        self.env = env
        os.environ.update(self.extra_env())  # read by this process's settings at django.setup()
        migrate(env)
        setup_django(env)
        self._populate()
        web, self.url = services.start_web(env, self.base)
        self.services.append(web)
        if self.worker:
            worker = services.start_worker(env, self.base, queues=self.queues, concurrency=self.concurrency)
            self.services.append(worker)
        self._start_more()
        print(f"# services: redis {redis_url}, web {self.url}{self._describe()}", flush=True)

    def _start_more(self) -> None:
        """Services a variant adds after the web server and the worker (none here)."""

    def _populate(self) -> None:
        """The bench user and workspace, through the ORM."""
        from django.contrib.auth import get_user_model

        from studio.models import Workspace

        self.user = get_user_model().objects.create_user(USERNAME, password=PASSWORD)
        self.workspace = Workspace.create_with_owner(WORKSPACE, self.user)

    def _describe(self) -> str:
        """The services line after the web server's address."""
        worker = f", worker -c {self.concurrency}" if self.worker else " (no worker)"
        return f"{worker}, data {self.base}"

    def __exit__(self, *exc_info) -> None:
        for service in reversed(self.services):
            try:
                _stop(service)
            except Exception as exc:  # keep stopping the others
                print(f"# could not stop {service.name}: {exc}", file=sys.stderr)
        self.services.clear()
        failed = exc_info[0] is not None and not issubclass(exc_info[0], KeyboardInterrupt)
        if self.base is not None and (self.keep or failed):
            print(
                f"# kept {self.base} (service logs, database){' for inspection of the failure' if failed else ''}",
                file=sys.stderr,
                flush=True,
            )
        elif self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)

    def log(self, name: str) -> str:
        """The tail of a service's log ("" for a service this stack does not have)."""
        for service in self.services:
            if service.name == name:
                return service.log()
        return ""

    def wait_final(self, run_id: int, timeout: float = 120):
        """The run once it reaches a final state (read from the database in-process); on timeout, say where it hung."""
        from runs.models import Run

        def final():
            run = Run.objects.get(pk=run_id)
            return run if run.is_final else None

        try:
            return services.wait_until(final, timeout, f"run {run_id} to end", interval=0.05)
        except TimeoutError:
            run = Run.objects.get(pk=run_id)
            raise RuntimeError(
                f"run {run_id} still {run.status} after {timeout} s (statuses {status_times(run_id)})\n"
                f"--- worker log ---\n{self.log('worker')}\n--- web log ---\n{self.log('web')}"
            ) from None

    def running_run(self, experiment: str = "bench"):
        """A Run made through the ORM and moved Queued -> Preparing -> Starting -> Running, as a worker would."""
        from django.core.files.uploadedfile import SimpleUploadedFile

        from runs import snapshots
        from runs.models import Experiment, Run, RunStatus

        snapshot = snapshots.stage_upload(SimpleUploadedFile("bench.py", b"pass\n")).commit(self.workspace, self.user)
        run = Run.objects.create(
            workspace=self.workspace,
            experiment=Experiment.objects.get_or_create(workspace=self.workspace, name=experiment)[0],
            created_by=self.user,
            snapshot=snapshot,
            entry_script="bench.py",
            compute_target=self.workspace.compute_targets.get(name="local"),
            status=RunStatus.QUEUED,
        )
        steps = [
            (RunStatus.PREPARING, RunStatus.QUEUED),
            (RunStatus.STARTING, RunStatus.PREPARING),
            (RunStatus.RUNNING, RunStatus.STARTING),
        ]
        for to, source in steps:
            if not run.transition(to, from_states=(source,)):
                raise RuntimeError(f"run {run.pk} did not move {source} -> {to}")
        return run

    # HTTP --------------------------------------------------------------------------------------
    def client(self):
        """An httpx client signed in through the login form (with its CSRF token), as a browser would be."""
        import httpx

        client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(60.0), follow_redirects=False)
        page = client.get("/accounts/login/")
        page.raise_for_status()
        response = client.post(
            "/accounts/login/",
            data={"username": USERNAME, "password": PASSWORD, "next": "/", "csrfmiddlewaretoken": _csrf(page.text)},
        )
        if response.status_code != 302 or "sessionid" not in client.cookies:
            raise RuntimeError(f"login failed: HTTP {response.status_code}")
        return client

    def session_client(self):
        """An httpx client carrying a session made in-process for the bench user (no login round trip)."""
        import httpx
        from django.conf import settings

        session = django_client(self.user)
        cookies = {settings.SESSION_COOKIE_NAME: session.cookies[settings.SESSION_COOKIE_NAME].value}
        return httpx.Client(base_url=self.url, cookies=cookies, timeout=60)

    def submit_form_token(self, client) -> str:
        """The CSRF token of the submit form (login rotates the token, so read it after signing in)."""
        page = client.get(f"/w/{WORKSPACE}/runs/new/")
        page.raise_for_status()
        return _csrf(page.text)

    def post_run(self, client, token: str, source: bytes, *, experiment: str, env_vars: str = "", arguments: str = ""):
        """POST the submit form for the local target; returns the run id from the redirect."""
        fields = {"arguments": arguments, "env_vars": env_vars, "compute_target": "local"}
        return _post_submit(client, token, source, experiment, fields)


def _post_submit(client, token: str, source: bytes, experiment: str, fields: dict[str, str]) -> int:
    """POST the submit form with `source` as a single uploaded bench.py and `fields` over the defaults; the run id."""
    data = {
        "csrfmiddlewaretoken": token,
        "experiment": experiment,
        "entry_script": "",
        "arguments": "",
        "env_vars": "",
        "compute_target": "local",
        "max_duration_seconds": "120",
        "display_name": "",
        "tags": "",
    }
    data.update(fields)
    response = client.post(
        f"/w/{WORKSPACE}/runs/new/", data=data, files={"source": ("bench.py", source, "text/x-python")}
    )
    if response.status_code != 302:
        raise RuntimeError(f"submit failed: HTTP {response.status_code}\n{response.text[:2000]}")
    match = RUN_REDIRECT.search(response.headers["location"])
    if match is None:
        raise RuntimeError(f"unexpected redirect after submit: {response.headers['location']}")
    return int(match.group(1))


def _csrf(html: str) -> str:
    """The CSRF token of the page's form."""
    match = CSRF_INPUT.search(html)
    if match is None:
        raise RuntimeError("no CSRF token in the page")
    return match.group(1)


def django_client(user):
    """Django's in-process test client, signed in as `user` (server time only, no network)."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


# The Docker variant --------------------------------------------------------------------------------------------------
class DockerStack(Stack):
    """The bench studio with a Docker target on the local engine.

    Differences from `Stack`: every service and this process get STUDIO_BUILD_DEFAULT_BASE_IMAGE and
    STUDIO_BUILD_CA_BUNDLE (`services.service_env` drops STUDIO_* variables, so they are added after it); the worker
    consumes the target's queue and `builds`; run ids start at a random offset, because container names are
    `studio-run-<id>` on an engine other studios and test suites share, and a fresh database would otherwise start at
    1 and remove their containers (the driver removes a "stale" container of the same name before creating its own).

    On the way out, after the services are stopped: containers of this bench (found by the BENCH_NONCE variable each
    run is given) and the images recorded in `images` are removed; the base image never is.
    """

    queues = f"{DOCKER_QUEUE},builds"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.nonce = secrets.token_hex(4)  # makes this invocation's definitions, tags and containers its own
        self.images: list[str] = []
        self.target = None

    def extra_env(self) -> dict[str, str]:
        """The build settings every process needs."""
        return {"STUDIO_BUILD_DEFAULT_BASE_IMAGE": BASE_IMAGE, "STUDIO_BUILD_CA_BUNDLE": CA_BUNDLE}

    def _populate(self) -> None:
        """The bench user and workspace, the Docker target, and run ids from a random offset."""
        from django.db import connection

        from studio.models import ComputeTarget

        super()._populate()
        self.target = self.workspace.compute_targets.create(
            name=DOCKER_TARGET,
            kind=ComputeTarget.Kind.DOCKER,
            docker_url="unix:///var/run/docker.sock",
            queue=DOCKER_QUEUE,
        )
        first_run_id = 100_000_000 + secrets.randbelow(1_000_000_000)
        with connection.cursor() as cursor:  # Django's SQLite tables use AUTOINCREMENT, so this sets the next id
            cursor.execute("UPDATE sqlite_sequence SET seq = %s WHERE name = 'runs_run'", [first_run_id])
            if cursor.rowcount == 0:
                cursor.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('runs_run', %s)", [first_run_id])

    def _describe(self) -> str:
        """The services line after the web server's address: the worker's queues and the bench nonce too."""
        return f", worker -c {self.concurrency} on {self.queues}, data {self.base}, bench nonce {self.nonce}"

    def __exit__(self, *exc_info) -> None:
        try:
            super().__exit__(*exc_info)  # the worker stops first: nothing makes a container after this
        finally:
            self.remove_docker_leftovers()

    def remove_docker_leftovers(self) -> None:
        """Remove this bench's containers and the images it recorded (never the base image)."""
        import docker

        try:
            client = docker.from_env(timeout=120)
        except docker.errors.DockerException as error:
            print(f"# could not reach the engine to clean up: {error}", file=sys.stderr)
            return
        try:
            self._remove_containers(client, docker.errors)
            self._remove_images(client, docker.errors)
        finally:
            client.close()

    def _remove_containers(self, client, errors) -> None:
        """Remove the `studio-run-*` containers whose environment carries this bench's nonce."""
        marker = f"BENCH_NONCE={self.nonce}"
        for container in client.containers.list(all=True, filters={"label": "studio.run", "name": "studio-"}):
            with contextlib.suppress(errors.NotFound):
                if marker in (container.attrs.get("Config", {}).get("Env") or []):
                    container.remove(force=True)
                    print(f"# removed leftover container {container.name}", file=sys.stderr)

    def _remove_images(self, client, errors) -> None:
        """Remove the images in `images`, skipping the base image."""
        for name in self.images:
            if name.split(":")[0] == BASE_IMAGE.split(":")[0]:
                continue  # never the base image
            try:
                client.images.remove(name, force=True)
            except errors.ImageNotFound:
                pass
            except errors.DockerException as error:
                print(f"# could not remove image {name}: {error}", file=sys.stderr)

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
    fields = {
        "env_vars": stack.run_env_vars(env_vars),
        "compute_target": DOCKER_TARGET,
        "environment": environment,
        "packages": "",
    }
    return _post_submit(client, token, source, experiment, fields)


def console_log(run_id: int) -> bytes:
    """The run's console log as stored ("" before it exists)."""
    from runs import storage

    path = storage.console_log_path(run_id)
    return path.read_bytes() if path.exists() else b""


# In-process Django on a throwaway database (no services) -------------------------------------------------------------
def django_in_process(folder: Path) -> None:
    """Django set up in this process on a migrated SQLite database and data dir in `folder`."""
    os.environ.update(
        {
            "STUDIO_DATA_DIR": str(folder),
            "DATABASE_URL": f"sqlite:///{folder}/bench.sqlite3",
            "DJANGO_SETTINGS_MODULE": "studio.settings",
            "STUDIO_LOG_LEVEL": "WARNING",
        }
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)
    import django

    django.setup()


def bench_experiment(name: str = "big"):
    """The bench user, its workspace's experiment `name` and a one-file snapshot for runs: (user, experiment, snapshot)."""
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile

    from runs import snapshots
    from runs.models import Experiment
    from studio.models import Workspace

    user = get_user_model().objects.create_user(USERNAME, password="x")
    workspace = Workspace.create_with_owner(WORKSPACE, user)
    experiment = Experiment.objects.create(workspace=workspace, name=name)
    snapshot = snapshots.stage_upload(SimpleUploadedFile("t.py", b"print(1)\n")).commit(workspace, user)
    return user, experiment, snapshot


def bulk_runs(experiment, snapshot, count: int) -> None:
    """`count` finished runs in `experiment` (8 in 10 Completed, then Failed, Canceled), bulk-inserted 5,000 at a time."""
    from django.utils import timezone

    from runs.models import Run, RunStatus

    workspace = experiment.workspace
    target = workspace.compute_targets.get()
    statuses = [RunStatus.COMPLETED] * 8 + [RunStatus.FAILED, RunStatus.CANCELED]
    at = timezone.now()
    Run.objects.bulk_create(
        (
            Run(workspace=workspace, experiment=experiment, snapshot=snapshot, entry_script="t.py",
                compute_target=target, status=statuses[i % len(statuses)], started_at=at, ended_at=at,
                tags={"i": str(i)})
            for i in range(count)
        ),
        batch_size=5000,
    )  # fmt: skip


# The endpoints variant -----------------------------------------------------------------------------------------------
IDENTITY_SCRIPT = """\
import json


def init():
    pass


def run(raw_data):
    return json.loads(raw_data)
"""


def docker_problem() -> str:
    """"" when a Docker engine answers and holds the base image, else why the Docker side of a bench is left out."""
    try:
        import docker

        client = docker.from_env(timeout=5)
    except Exception as error:  # no engine, whatever the reason: say it
        return f"no Docker engine answers ({type(error).__name__}: {error})"
    try:
        client.ping()
    except Exception as error:
        return f"no Docker engine answers ({type(error).__name__}: {error})"
    try:
        client.images.get(BASE_IMAGE)
    except Exception:
        return f"the base image {BASE_IMAGE} is missing (.ci/run makes it with debootstrap)"
    finally:
        client.close()
    return ""


class EndpointStack(Stack):
    """The bench studio with the endpoints' processes as `studioctl.py start` runs them: the scoring gateway
    (`python -m endpoints.gateway`, `gateway_url`) and the controller (`manage.py serve_endpoints`); no Celery worker
    unless asked (deployments need none). With `docker=True` also a Docker target (`docker_target`) on this machine's
    engine, and every process gets the build settings of `DockerStack`.

    On the way out the controller stops first, then every instance it made is removed the way the controller removes
    one (a local instance's process group, a container), then the other services stop; as a safety net, containers
    labelled with this studio's instance id and processes running from its work dir are removed too, and last the
    images built for the bench (`images`).
    """

    def __init__(self, *, docker: bool = False, **kwargs):
        kwargs.setdefault("worker", False)
        super().__init__(**kwargs)
        self.docker = docker
        self.gateway_url = ""
        self.local_target = None
        self.docker_target = None
        self.nonce = secrets.token_hex(4)  # makes this invocation's environment definitions (and images) its own
        self.images: list[str] = []  # images built for the bench (`DockerStack.build_environment`), removed on exit

    def extra_env(self) -> dict[str, str]:
        if not self.docker:
            return {}
        return {"STUDIO_BUILD_DEFAULT_BASE_IMAGE": BASE_IMAGE, "STUDIO_BUILD_CA_BUNDLE": CA_BUNDLE}

    def _populate(self) -> None:
        from studio.models import ComputeTarget

        super()._populate()
        self.local_target = self.workspace.compute_targets.get(name="local")
        if self.docker:
            self.docker_target = self.workspace.compute_targets.create(
                name=DOCKER_TARGET, kind=ComputeTarget.Kind.DOCKER, docker_url="unix:///var/run/docker.sock",
                queue=DOCKER_QUEUE)

    def _start_more(self) -> None:
        gateway, self.gateway_url = services.start_gateway(self.env, self.base)
        self.services.append(gateway)
        self.services.append(services.start_controller(self.env, self.base))

    def _describe(self) -> str:
        docker = f", Docker target on {BASE_IMAGE}" if self.docker else ""
        return f"{super()._describe()}, gateway {self.gateway_url}, endpoints controller{docker}"

    def service(self, name: str) -> services.Service | None:
        return next((service for service in self.services if service.name == name), None)

    def __exit__(self, *exc_info) -> None:
        try:
            controller = self.service("endpoints")
            if controller is not None:  # nothing starts an instance after this
                self.services.remove(controller)
                _stop(controller)
            if self.workspace is not None:
                self.remove_instances()
        except Exception as error:  # the services must stop all the same
            print(f"# could not remove the endpoints' instances: {error}", file=sys.stderr)
        finally:
            try:
                super().__exit__(*exc_info)
            finally:
                if self.images:
                    self.remove_images()

    def remove_images(self) -> None:
        """Remove the images in `images` (never the base image)."""
        import docker

        try:
            client = docker.from_env(timeout=120)
        except docker.errors.DockerException as error:
            print(f"# could not reach the engine to remove images: {error}", file=sys.stderr)
            return
        try:
            DockerStack._remove_images(self, client, docker.errors)
        finally:
            client.close()

    def remove_instances(self) -> None:
        """Every instance as its driver removes it, then any container or process of this studio left over."""
        from django.conf import settings

        from endpoints.instances import driver_for
        from endpoints.models import Instance

        for instance in Instance.objects.select_related("deployment__compute_target"):
            with contextlib.suppress(Exception):
                driver_for(instance.deployment.compute_target).remove(instance)
        if self.docker:
            import docker

            with contextlib.suppress(docker.errors.DockerException):
                client = docker.from_env(timeout=60)
                try:
                    label = f"studio.instance={settings.STUDIO_INSTANCE_ID}"
                    for container in client.containers.list(all=True, filters={"label": label}):
                        container.remove(force=True)
                        print(f"# removed leftover container {container.name}", file=sys.stderr)
                finally:
                    client.close()
        marker = str(Path(settings.STUDIO_WORK_DIR) / "endpoint-dep-").encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    os.killpg(os.getpgid(int(entry.name)), signal.SIGKILL)
                    print(f"# killed a leftover instance process {entry.name}", file=sys.stderr)

    # Models, endpoints and deployments -------------------------------------------------------------------------------
    def register_model(self, name: str, files: dict[str, bytes]):
        """A model version whose files are `files` (paths inside the model folder), registered from a run's outputs
        as a worker stores them."""
        from models_registry import registry
        from runs import storage
        from runs.models import Run, RunStatus

        run = self.running_run(f"train-{name}")
        collector = storage.OutputCollector(run.pk)
        for path, content in files.items():
            collector.add(f"outputs/{path}", io.BytesIO(content), len(content))
        collector.commit()
        Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED, exit_code=0)
        run.refresh_from_db()
        return registry.register_from_run(run, self.user, name, ["outputs"])

    def scoring_path(self, endpoint) -> str:
        return f"/endpoints/{endpoint.workspace.name}/{endpoint.name}/score"

    def gateway_port(self) -> int:
        return int(self.gateway_url.rsplit(":", 1)[1])


def wait_state(deployment, *states: str, timeout: float = 120):
    """The deployment once it is in one of `states` (read every 20 ms); raises with its reason when it failed."""
    return services.wait_deployment_state(deployment, *states, timeout=timeout, interval=0.02)
