"""Shared test setup: a real Redis for the whole session, the cast, and (for end-to-end tests) a real
Celery worker and ASGI server sharing the test database.

The cast, in workspace `lab`: alice (owner), carol (contributor), bob (reader), charlie (outsider).
"""

from __future__ import annotations

import functools
import html
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse

from studio.celery import app as celery_app
from studio.models import Membership, Role, Workspace
from tests import services

PASSWORD = "correct-horse-battery-staple"
# The base image Docker tests build on (made by .ci/run with debootstrap when missing), and the CA bundle builds use.
TEST_BASE_IMAGE = os.environ.get("STUDIO_TEST_BASE_IMAGE", "studio/base-python:bookworm")
TEST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt" if os.path.exists("/etc/ssl/certs/ca-certificates.crt") else ""


def _flush_retrying_deadlocks() -> None:
    """A transactional test ends by emptying every table (TRUNCATE on PostgreSQL) while real processes may still be
    writing: a worker of the session finishing a run the test queued, say. PostgreSQL then may end the TRUNCATE as a
    deadlock's victim ("deadlock detected"), the next test finds the last one's rows, and fails for no fault of its
    own. The other transaction ends at once after a deadlock, so the flush is tried again (a few times)."""
    import time

    from django.test import testcases

    original = testcases.TransactionTestCase._fixture_teardown

    def teardown(self):
        for attempt in range(5):
            try:
                return original(self)
            except Exception as error:
                if "deadlock detected" not in str(error.__cause__ or error) or attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))

    testcases.TransactionTestCase._fixture_teardown = teardown


_flush_retrying_deadlocks()


@pytest.fixture(scope="session", autouse=True)
def studio_services():
    """Every test talks to a real Redis; the data dir is a fresh temporary folder.

    Not under pytest's own temporary folders (0700): local runs execute as users of their own, who must reach their
    working folder through the data dir (0711), as in a real installation.
    """
    base = Path(tempfile.mkdtemp(prefix="studio-test-"))
    base.chmod(0o711)
    (base / "data").mkdir(mode=0o711)
    (base / "data").chmod(0o711)
    redis_service, url = services.start_redis(base / "redis")
    django_settings.STUDIO_REDIS_URL = url
    django_settings.DATA_DIR = base / "data"
    django_settings.STUDIO_WORK_DIR = base / "data" / "work"
    django_settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE = TEST_BASE_IMAGE
    django_settings.STUDIO_BUILD_CA_BUNDLE = TEST_CA_BUNDLE
    celery_app.conf.CELERY_BROKER_URL = url  # the namespaced key is the one Celery reads here
    yield {"redis_url": url, "base": base, "data_dir": base / "data"}
    redis_service.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def data_dir(settings, tmp_path):
    """A data dir of the test's own (for tests without a worker): run ids are reused across tests, files must not be."""
    settings.DATA_DIR = tmp_path / "data"
    settings.STUDIO_WORK_DIR = tmp_path / "data" / "work"
    return settings.DATA_DIR


@pytest.fixture(autouse=True)
def fresh_redis(studio_services):
    """Run ids are reused across tests (rolled back), so their Redis streams must not outlive a test."""
    from studio.redis_client import get_redis

    get_redis().flushdb()


@pytest.fixture
def redis_client(studio_services):
    from studio.redis_client import get_redis

    return get_redis()


@functools.cache
def _fast_password_hash() -> str:
    """PASSWORD hashed by the default hasher with few iterations: valid for every server the tests start, and fast."""
    return PBKDF2PasswordHasher().encode(PASSWORD, "castsalt", iterations=1000)


def _user(username: str):
    user = get_user_model()(username=username, password=_fast_password_hash())
    user.save()
    return user


@pytest.fixture
def alice(db):
    return _user("alice")


@pytest.fixture
def bob(db):
    return _user("bob")


@pytest.fixture
def carol(db):
    return _user("carol")


@pytest.fixture
def charlie(db):
    return _user("charlie")


@pytest.fixture
def workspace(alice, bob, carol, charlie) -> Workspace:
    ws = Workspace.create_with_owner("lab", alice)
    Membership.objects.create(workspace=ws, user=bob, role=Role.READER)
    Membership.objects.create(workspace=ws, user=carol, role=Role.CONTRIBUTOR)
    Workspace.create_with_owner("elsewhere", charlie)
    return ws


@pytest.fixture
def cast(workspace, alice, bob, carol, charlie):
    return {"alice": alice, "bob": bob, "carol": carol, "charlie": charlie}


def login(client, user):
    client.force_login(user)
    return client


def py_upload(source: str, name: str = "train.py") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, source.encode(), content_type="text/x-python")


def zip_upload(files: dict[str, str | bytes], name: str = "src.zip") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, content in files.items():
            archive.writestr(path, content)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/zip")


def make_run(workspace, user, source: str = "print('hi')\n", *, experiment="exp", **config):
    """A run submitted the way the form submits it.

    Under the `db` fixture the enqueue (an on-commit hook) never fires, so the run stays Queued.
    """
    from runs import snapshots
    from runs.models import Run
    from runs.submission import submit_run

    staged = snapshots.stage_upload(py_upload(source))
    target = workspace.compute_targets.get(name="local")
    run = submit_run(workspace, user, experiment_name=experiment, staged=staged, entry_script="train.py",
                     compute_target=target, **config)
    return Run.objects.get(pk=run.pk)


def _test_database_url() -> str:
    cfg = connection.settings_dict
    if cfg["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{cfg['NAME']}"
    return f"postgres://{cfg['USER']}:{cfg['PASSWORD']}@{cfg['HOST'] or 'localhost'}:{cfg['PORT'] or 5432}/{cfg['NAME']}"


@pytest.fixture(scope="session")
def e2e_env(studio_services, django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        database_url = _test_database_url()
    env = services.service_env(
        database_url=database_url, redis_url=studio_services["redis_url"], data_dir=studio_services["data_dir"]
    )
    env["STUDIO_SECRET_KEY"] = django_settings.SECRET_KEY  # sessions made by the tests are valid in the servers
    env["STUDIO_BUILD_DEFAULT_BASE_IMAGE"] = TEST_BASE_IMAGE
    env["STUDIO_BUILD_CA_BUNDLE"] = TEST_CA_BUNDLE
    gateway_port = services.free_port()  # every process agrees on where scoring goes (the Test tab, the pages)
    env["STUDIO_GATEWAY_PORT"] = str(gateway_port)
    env["STUDIO_GATEWAY_URL"] = f"http://127.0.0.1:{gateway_port}"
    return env


@pytest.fixture(scope="session")
def worker(e2e_env, studio_services, web):
    """A real Celery worker serving the `local` queue against the test database; its runs' SDK reaches `web`."""
    from studio.redis_client import get_redis

    get_redis().delete("local", "studio")  # messages queued by earlier unit tests are not for this worker
    service = services.start_worker({**e2e_env, "STUDIO_PUBLIC_URL": web}, studio_services["base"])
    yield service
    service.stop()


@pytest.fixture(scope="session")
def gateway(e2e_env, studio_services):
    """The scoring gateway (endpoints/gateway.py) against the test database, where e2e_env says it listens."""
    service, url = services.start_gateway(e2e_env, studio_services["base"])
    yield url
    service.stop()


@pytest.fixture(scope="session")
def controller(e2e_env, studio_services):
    """The endpoints' controller (`manage.py serve_endpoints`) against the test database."""
    service = services.start_controller(e2e_env, studio_services["base"])
    yield service
    service.stop()
    services.kill_local_instances(studio_services["data_dir"])


@pytest.fixture(scope="session")
def web(e2e_env, studio_services):
    """The real ASGI server (uvicorn), for SSE and the browser test."""
    service, url = services.start_web(e2e_env, studio_services["base"])
    yield url
    service.stop()


@pytest.fixture
def sklearn_environment(db):
    """The curated Studio-sklearn environment the example runs in. Tests that flush the database (transaction=True)
    remove what the migrations seeded; it is seeded again here, the same way."""
    import importlib

    from django.apps import apps

    for module in ("environments.migrations.0002_curated_environments",
                   "environments.migrations.0003_curated_sklearn_with_matplotlib",
                   "environments.migrations.0004_curated_sklearn_serving"):
        importlib.import_module(module).seed(apps, None)
    return "Studio-sklearn"


@pytest.fixture
def examples_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "examples"


def text(response) -> str:
    """A page's text with HTML entities decoded, for asserting what a user reads."""
    return html.unescape(response.content.decode())


def assert_sent_to_sign_in(response, path: str) -> None:
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={quote(path)}"


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium_path() -> str | None:
    if os.path.isfile("/usr/bin/chromium"):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def _skip(reason: str):
    print(f"SKIP: {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser():
    """Debian's headless Chromium driven by playwright; skipped, saying why, when it is missing or won't start."""
    executable = _chromium_path()
    if executable is None:
        _skip("no Chromium at /usr/bin/chromium or on PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        _skip(f"playwright is not installed: {exc}")
    manager = sync_playwright().start()
    try:
        try:
            instance = manager.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Error as exc:
            _skip(f"playwright could not launch {executable}: {str(exc).splitlines()[0]}")
        try:
            yield instance
        finally:
            instance.close()
    finally:
        manager.stop()
