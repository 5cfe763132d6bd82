"""Shared setup for the benchmarks: a throwaway studio (Redis, migrated SQLite, Celery worker, uvicorn) and a
logged-in HTTP client.

`Stack` is a context manager: whatever happens inside (an exception, Ctrl-C, SIGTERM), every process it started
is stopped on the way out, and the temporary folder removed (kept with `keep=True`, or after a failure so its
service logs and database can be read).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
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


def reproduce_line(script: str, argv: list[str]) -> str:
    """The command that reproduces this run, for the top of the output."""
    return f"$ cd {ROOT} && .venv/bin/python bench/{script} {shlex.join(argv)}".rstrip()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): always one of the measured values."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _raise_on_sigterm(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


def _stop(service: services.Service) -> None:
    """Stop a service, then anything left in its process group (prefork children of Celery, for one)."""
    pgid = service.process.pid  # each service is started in its own session, so its pid is its group id
    try:
        service.stop()
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
            os.killpg(pgid, signal.SIGKILL)


class Stack:
    """Redis + migrated SQLite + Celery worker + uvicorn in a temporary folder, and Django set up in-process."""

    def __init__(self, *, concurrency: int = 2, keep: bool = False):
        self.concurrency = concurrency
        self.keep = keep
        self.services: list[services.Service] = []
        self.base: Path | None = None
        self.url = ""

    def __enter__(self) -> Stack:
        signal.signal(signal.SIGTERM, _raise_on_sigterm)
        self.base = Path(tempfile.mkdtemp(prefix="studio-bench-"))
        try:
            self._start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _start(self) -> None:
        base = self.base
        data_dir = base / "data"
        data_dir.mkdir()
        redis_service, redis_url = services.start_redis(base / "redis")
        self.services.append(redis_service)
        database_url = f"sqlite:///{base / 'bench.sqlite3'}"
        env = services.service_env(database_url=database_url, redis_url=redis_url, data_dir=data_dir)
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"], env=env, cwd=ROOT, capture_output=True, text=True
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"manage.py migrate failed:\n{migrate.stdout}\n{migrate.stderr}")

        # Django in this process talks to the same database, data dir and Redis as the services.
        for key in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "STUDIO_REDIS_URL", "STUDIO_DATA_DIR"):
            os.environ[key] = env[key]
        import django

        django.setup()
        logging.getLogger("httpx").setLevel(logging.WARNING)  # the studio's logging config prints every request
        from django.contrib.auth import get_user_model

        from studio.models import Workspace

        user = get_user_model().objects.create_user(USERNAME, password=PASSWORD)
        Workspace.create_with_owner(WORKSPACE, user)

        web, self.url = services.start_web(env, base)
        self.services.append(web)
        self.services.append(services.start_worker(env, base, concurrency=self.concurrency))
        print(f"# services: redis {redis_url}, web {self.url}, worker -c {self.concurrency}, data {base}", flush=True)

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

    def submit_form_token(self, client) -> str:
        """The CSRF token of the submit form (login rotates the token, so read it after signing in)."""
        page = client.get(f"/w/{WORKSPACE}/runs/new/")
        page.raise_for_status()
        return _csrf(page.text)

    def post_run(self, client, token: str, source: bytes, *, experiment: str, env_vars: str = "", arguments: str = ""):
        """POST the submit form; returns the run id from the redirect."""
        response = client.post(
            f"/w/{WORKSPACE}/runs/new/",
            data={
                "csrfmiddlewaretoken": token,
                "experiment": experiment,
                "entry_script": "",
                "arguments": arguments,
                "env_vars": env_vars,
                "compute_target": "local",
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


def _csrf(html: str) -> str:
    match = CSRF_INPUT.search(html)
    if match is None:
        raise RuntimeError("no CSRF token in the page")
    return match.group(1)


def status_times(run_id: int) -> dict[str, float]:
    """Epoch seconds of each status change of a run."""
    from runs.models import RunStatusChange

    return {c.status: c.at.timestamp() for c in RunStatusChange.objects.filter(run_id=run_id)}


def now() -> float:
    return time.time()
