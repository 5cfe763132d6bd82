"""Settings come from environment variables; bad values are refused at start-up with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args: str, env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update({"DJANGO_SETTINGS_MODULE": "studio.settings", "STUDIO_DATA_DIR": str(tmp_path), **env_extra})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_production_settings_pass_the_deploy_check(tmp_path):
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING",
        env_extra={"STUDIO_MODE": "production", "STUDIO_SECRET_KEY": "k" * 10 + "Zq8#mT2!vX9@pL4$wR7^nB1&cF6*hJ3(dG5)sK0_" + "x" * 10},
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = run_manage("check", env_extra={"STUDIO_MODE": "production"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "Set the environment variable STUDIO_SECRET_KEY." in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("STUDIO_SNAPSHOT_MAX_FILES", "lots", "STUDIO_SNAPSHOT_MAX_FILES='lots': expected a whole number."),
        ("STUDIO_SNAPSHOT_MAX_BYTES", "0", "STUDIO_SNAPSHOT_MAX_BYTES=0: must be at least 1."),
        ("STUDIO_DEBUG", "maybe", "STUDIO_DEBUG='maybe': use one of 1/0, true/false, yes/no, on/off."),
        ("STUDIO_MODE", "prod", "STUDIO_MODE='prod': use one of development, production."),
        ("STUDIO_DATA_DIR", "relative/dir", "STUDIO_DATA_DIR='relative/dir': use an absolute path."),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(tmp_path, variable, value, message):
    result = run_manage("check", env_extra={variable: value}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr


def test_the_embedded_secret_key_is_made_once_and_kept_private(tmp_path):
    first = run_manage("check", env_extra={}, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "secret_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text()
    run_manage("check", env_extra={}, tmp_path=tmp_path)
    assert key_file.read_text() == key


@pytest.mark.django_db
def test_sqlite_runs_in_wal_mode():
    if connection.vendor != "sqlite":
        pytest.skip("the database is not SQLite")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
