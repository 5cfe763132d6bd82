"""Studio settings. Everything a deployment changes comes from environment variables (see README)."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from studio.config import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_path,
    env_str,
    read_or_create_secret,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# What the studio writes is its own: files 0600, folders 0700 (the data dir itself is 0711, so the users local runs
# execute as can reach their own working folder and the shared virtualenvs, and nothing else).
os.umask(0o077)

# Where snapshots, run storage, logs and working directories live.
DATA_DIR = env_path("STUDIO_DATA_DIR", BASE_DIR / "data")

# "production" turns on HTTPS-only cookies, HSTS and requires an explicit secret key.
STUDIO_MODE = env_choice("STUDIO_MODE", "development", ("development", "production"))
PRODUCTION = STUDIO_MODE == "production"

DEBUG = env_bool("STUDIO_DEBUG", False)
if PRODUCTION:
    SECRET_KEY = env_str("STUDIO_SECRET_KEY")
else:
    SECRET_KEY = env_str("STUDIO_SECRET_KEY", "") or read_or_create_secret(DATA_DIR / "secret_key")

# host.docker.internal: how runs in containers on this machine reach the studio's API.
ALLOWED_HOSTS = env_list(
    "STUDIO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver", "host.docker.internal"]
)
CSRF_TRUSTED_ORIGINS = env_list("STUDIO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "ninja",
    "studio",
    "runs",
    "environments",
    "models_registry",
    "mlflow_api",
    "endpoints",
]

MIDDLEWARE = [
    "studio.middleware.ApiJsonErrorsMiddleware",  # outermost: it sees every error response under /api/
    "mlflow_api.middleware.MlflowJsonErrorsMiddleware",  # and under /mlflow/, in MLflow's error shape
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "studio.middleware.BadRequestMessageMiddleware",
]

ROOT_URLCONF = "studio.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "studio.context_processors.workspaces",
            ],
            "builtins": ["studio.templatetags.studio_tags"],
        },
    },
]

WSGI_APPLICATION = "studio.wsgi.application"
ASGI_APPLICATION = "studio.asgi.application"

# SQLite in WAL mode is the embedded default; DATABASE_URL selects PostgreSQL. Connections are kept for a minute:
# the web server runs sync views in threads it keeps (studio/limits.py), so a request reuses its thread's connection
# (about 2 ms less per request) instead of opening one; requests to async views close theirs as they end.
_default_sqlite = DATA_DIR / "studio.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{_default_sqlite}"), conn_max_age=env_int("STUDIO_DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # Tests share the database with a real worker process, so it must be a file, never :memory:.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-studio.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
# `studioctl.py start` collects the static files here (compressed, with hashed names) and serves them with long cache
# headers: STUDIO_STATIC_MANIFEST=1, always on in production. Without it (tests, `manage.py runserver`) the files are
# served as they are from their folders.
STATIC_ROOT = env_path("STUDIO_STATIC_ROOT", BASE_DIR / "staticfiles")
STATIC_MANIFEST = PRODUCTION or env_bool("STUDIO_STATIC_MANIFEST", False)
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "studio.staticfinders.PlotlyFinder",  # plotly.min.js from the plotly package, never from a CDN
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not STATIC_MANIFEST
WHITENOISE_MAX_AGE = 3600  # files without a hash in their name; hashed ones are cached for a year (immutable)

# Request bodies: routes that take uploads have limits of their own (studio/limits.py); every other route this one.
STUDIO_REQUEST_MAX_BYTES = env_int("STUDIO_REQUEST_MAX_BYTES", 16 * 1024 * 1024, minimum=1024)
# The limits above are enforced while the body streams in; Django's own in-memory check would refuse bodies the route
# accepts (a metrics batch of 100,000 points is about 5 MB of JSON).
DATA_UPLOAD_MAX_MEMORY_SIZE = STUDIO_REQUEST_MAX_BYTES
# Uploads above this go to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = str(DATA_DIR / "tmp" / "uploads")  # on the data disk, made at start (studio/apps.py)

# Security. Production mode is what `manage.py check --deploy` is run against.
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("STUDIO_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("STUDIO_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("STUDIO_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("STUDIO_HSTS_PRELOAD", True)

# Redis: Celery broker, live log streams and cancel signals.
# The embedded Redis listens on loopback only and requires a password, made once in the data dir (0600): user code
# on this machine can reach the port, never the password.
STUDIO_REDIS_URL = env_str("STUDIO_REDIS_URL", "") or (
    f"redis://:{read_or_create_secret(DATA_DIR / 'redis_password', make=lambda: __import__('secrets').token_hex(24))}"
    f"@127.0.0.1:{env_int('STUDIO_REDIS_PORT', 6390, minimum=1, maximum=65535)}/0"
)

# Celery (read by studio/celery.py with namespace CELERY_).
CELERY_BROKER_URL = STUDIO_REDIS_URL
CELERY_RESULT_BACKEND = None  # nothing reads task results; state lives in the database
CELERY_TASK_SERIALIZER = "json"  # JSON only: tasks take primary keys, never pickled objects
CELERY_ACCEPT_CONTENT = ["json"]
# A task is acknowledged when it ends; a worker that dies has it redelivered after the visibility timeout, which the
# claim makes a no-op (its runs are taken over sooner, by adoption: runs/execution.py).
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # runs are long: one at a time per worker process
CELERY_TASK_DEFAULT_QUEUE = "studio"
CELERY_TASK_SOFT_TIME_LIMIT = None  # runs enforce their own maximum duration
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 12 * 3600}
CELERY_BEAT_SCHEDULE = {
    "reap-lost-runs": {"task": "runs.tasks.reap_lost_runs", "schedule": env_float("STUDIO_REAP_SECONDS", 5.0, minimum=1)},
    "sweep-targets": {"task": "runs.tasks.sweep_targets", "schedule": 60.0},
    "requeue-stale-queued": {"task": "runs.tasks.requeue_stale_queued",
                             "schedule": min(60.0, env_float("STUDIO_REQUEUE_AFTER_SECONDS", 300.0, minimum=1))},
    "purge-endpoint-requests": {"task": "endpoints.tasks.purge_requests", "schedule": 3600.0},
}
# The periodic tasks have a worker of their own (`-Q control`), so a pool busy watching runs never starves them.
CELERY_TASK_ROUTES = {
    "runs.tasks.reap_lost_runs": {"queue": "control"},
    "runs.tasks.sweep_targets": {"queue": "control"},
    "runs.tasks.requeue_stale_queued": {"queue": "control"},
    "endpoints.tasks.purge_requests": {"queue": "control"},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Environments and image builds. Settings needed behind a proxy or without a public registry.
STUDIO_BUILD_DEFAULT_BASE_IMAGE = env_str("STUDIO_BUILD_DEFAULT_BASE_IMAGE", "python:3.11-slim")
STUDIO_BUILD_PIP_INDEX_URL = env_str("STUDIO_BUILD_PIP_INDEX_URL", "")
STUDIO_BUILD_PIP_EXTRA_INDEX_URL = env_str("STUDIO_BUILD_PIP_EXTRA_INDEX_URL", "")
# A CA bundle copied into every build (PIP_CERT points at it), e.g. /etc/ssl/certs/ca-certificates.crt.
STUDIO_BUILD_CA_BUNDLE = env_str("STUDIO_BUILD_CA_BUNDLE", "")
STUDIO_BUILD_NETWORK = env_str("STUDIO_BUILD_NETWORK", "")  # e.g. "host" when builds must use the host's proxy
STUDIO_BUILD_DOCKER_URL = env_str("STUDIO_BUILD_DOCKER_URL", "")  # empty: DOCKER_HOST or the local socket
# Docker engines targets may point at (comma-separated: unix:///var/run/docker.sock, gpu-*.lab, 10.1.0.0/16:2376);
# empty allows any. See studio/docker_engine.engine_not_allowed.
STUDIO_DOCKER_ALLOWED_ENGINES = env_list("STUDIO_DOCKER_ALLOWED_ENGINES", [])
STUDIO_BUILD_TIMEOUT_SECONDS = env_int("STUDIO_BUILD_TIMEOUT_SECONDS", 3600, minimum=60)
# The studio's URL as a container sees it (for the SDK inside Docker runs): host gateway on Linux.
# Where the web server listens (`studioctl.py start --host/--port`): the URLs runs are given derive from it.
STUDIO_PORT = env_int("STUDIO_PORT", 8000, minimum=1, maximum=65535)
STUDIO_CONTAINER_API_URL = env_str("STUDIO_CONTAINER_API_URL", f"http://host.docker.internal:{STUDIO_PORT}")
# Endpoints: the scoring gateway listens on STUDIO_GATEWAY_PORT (the web port + 1 unless set); scoring URLs shown
# in the pages start with STUDIO_GATEWAY_URL (set it to the address clients use behind a proxy). Request records
# are kept STUDIO_ENDPOINT_REQUEST_DAYS days (the charts' ten-second summaries too).
STUDIO_GATEWAY_PORT = env_int("STUDIO_GATEWAY_PORT", STUDIO_PORT + 1 if STUDIO_PORT < 65535 else 8001, minimum=1,
                              maximum=65535)
STUDIO_GATEWAY_URL = env_str("STUDIO_GATEWAY_URL", f"http://127.0.0.1:{STUDIO_GATEWAY_PORT}").rstrip("/")
STUDIO_ENDPOINT_REQUEST_DAYS = env_int("STUDIO_ENDPOINT_REQUEST_DAYS", 30, minimum=1, maximum=3650)
# Fernet key for secrets at rest (registry passwords, TLS keys); derived from the secret key when empty.
STUDIO_ENCRYPTION_KEY = env_str("STUDIO_ENCRYPTION_KEY", "")

# The model registry: the largest model (all its files) and how many files it may have.
STUDIO_MODEL_MAX_BYTES = env_int("STUDIO_MODEL_MAX_BYTES", 50 * 1024**3, minimum=1)
STUDIO_MODEL_MAX_FILES = env_int("STUDIO_MODEL_MAX_FILES", 10_000, minimum=1)

# Snapshots.
STUDIO_SNAPSHOT_MAX_BYTES = env_int("STUDIO_SNAPSHOT_MAX_BYTES", 300 * 1024 * 1024, minimum=1)
STUDIO_SNAPSHOT_MAX_FILES = env_int("STUDIO_SNAPSHOT_MAX_FILES", 2000, minimum=1)

# Runs.
STUDIO_RUN_HEARTBEAT_SECONDS = env_float("STUDIO_RUN_HEARTBEAT_SECONDS", 5.0, minimum=0.5)
# A run whose heartbeat is this late is shown NotResponding and offered to a worker of its queue to adopt (which ends
# it only when its script is really gone).
# A run Queued this long is sent to its queue again (the broker lost its message); the claim makes a duplicate harmless.
STUDIO_REQUEUE_AFTER_SECONDS = env_float("STUDIO_REQUEUE_AFTER_SECONDS", 300.0, minimum=1)
STUDIO_RUN_LOST_AFTER_SECONDS = env_float("STUDIO_RUN_LOST_AFTER_SECONDS", 20.0, minimum=1)
STUDIO_CANCEL_GRACE_SECONDS = env_float("STUDIO_CANCEL_GRACE_SECONDS", 5.0, minimum=0)
STUDIO_LOG_STREAM_MAXLEN = env_int("STUDIO_LOG_STREAM_MAXLEN", 200_000, minimum=1000)
STUDIO_LOG_LIVE_LINE_BYTES = env_int("STUDIO_LOG_LIVE_LINE_BYTES", 16 * 1024, minimum=256)
STUDIO_IMAGE_MAX_BYTES = env_int("STUDIO_IMAGE_MAX_BYTES", 10 * 1024 * 1024, minimum=1)
STUDIO_UPLOAD_MAX_BYTES = env_int("STUDIO_UPLOAD_MAX_BYTES", 1024 * 1024 * 1024, minimum=1)
STUDIO_SYSTEM_METRICS_SECONDS = env_float("STUDIO_SYSTEM_METRICS_SECONDS", 5.0, minimum=0.2)
# What a run may leave in ./outputs and ./logs: per file, and in all.
STUDIO_OUTPUT_FILE_MAX_BYTES = env_int("STUDIO_OUTPUT_FILE_MAX_BYTES", 10 * 1024**3, minimum=1)
STUDIO_OUTPUTS_MAX_BYTES = env_int("STUDIO_OUTPUTS_MAX_BYTES", 20 * 1024**3, minimum=1)
# Names this installation's containers on shared Docker engines (studio-<id>-run-<run id>); made once in the data dir.
STUDIO_INSTANCE_ID = env_str("STUDIO_INSTANCE_ID", "") or read_or_create_secret(
    DATA_DIR / "instance_id", make=lambda: __import__("secrets").token_hex(4)
)
# Scratch directories of running local runs. With STUDIO_LOCAL_RUN_USER, put it outside the (0700) data dir.
STUDIO_WORK_DIR = env_path("STUDIO_WORK_DIR", DATA_DIR / "work")
# How local runs are kept from the studio (studio/sandbox.py): auto (a bubblewrap sandbox when it works, else a
# user id per run when the studio is root), sandbox, user or none.
STUDIO_LOCAL_ISOLATION = env_choice("STUDIO_LOCAL_ISOLATION", "auto", ("auto", "sandbox", "user", "none"))
# A local run's own user id is this plus the run's id (the studio running as root).
STUDIO_RUN_UID_BASE = env_int("STUDIO_RUN_UID_BASE", 1_500_000_000, minimum=100_000, maximum=4_000_000_000)
# Run every local run as this OS user instead of a user id per run.
STUDIO_LOCAL_RUN_USER = env_str("STUDIO_LOCAL_RUN_USER", "")
# Interpreter for runs on the local target when the target names none: the worker's own when the run's user can
# execute it, else the system's python3.
STUDIO_LOCAL_PYTHON = env_str("STUDIO_LOCAL_PYTHON", "")
# The in-run SDK (studio_sdk), put on every local run's PYTHONPATH.
STUDIO_SDK_PATH = BASE_DIR / "sdk"
# Public base URL of the studio, handed to runs for the SDK.
STUDIO_PUBLIC_URL = env_str("STUDIO_PUBLIC_URL", f"http://127.0.0.1:{STUDIO_PORT}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_choice("STUDIO_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))},
}
