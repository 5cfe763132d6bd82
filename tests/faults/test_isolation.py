"""A submitted script attacks the studio that runs it: the secret key, the database, the Redis password, another
run's folders, Redis itself (read, write, and the CONFIG SET dir + SAVE trick), the studio's source and its
processes. Everything is refused, in the sandbox (bubblewrap) and with a user id per run without it."""

from __future__ import annotations

import re

import pytest
from django.conf import settings

from runs import storage
from runs.models import RunStatus
from tests.faults.conftest import ATTEMPT, database_file, is_root, wait_final, wait_lines
from tests.services import ROOT
from tests.stack import SupervisedStack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

VICTIM = """\
import os, time
os.makedirs("outputs", exist_ok=True)
with open("secret-notes.txt", "w") as handle:
    handle.write("VICTIM-WORKDIR-SECRET")
print("line 0", flush=True)
time.sleep(120)
"""

ATTACK = ATTEMPT + r"""
def read(path):
    with open(path, "rb") as handle:
        return handle.read(200)

def redis_says(*commands):
    with socket.create_connection(("127.0.0.1", int(os.environ["KV_PORT"])), timeout=5) as sock:
        answers = []
        for command in commands:
            parts = command.split()
            sock.sendall(("*%d\r\n" % len(parts) + "".join("$%d\r\n%s\r\n" % (len(p), p) for p in parts)).encode())
            answers.append(sock.recv(200).decode(errors="replace"))
    bad = [answer for answer in answers if not answer.startswith(("+", ":", "$", "*"))]
    if bad:
        raise PermissionError(bad[0].strip())
    return answers

data = os.environ["DATA"]
other = os.environ["OTHER"]
attempt("secret key", lambda: read(f"{data}/secret_key"))
attempt("redis password", lambda: read(f"{data}/redis_password"))
# In the sandbox the data dir is an empty tmpfs holding only the mount point of the run's own working folder.
attempt("data dir listing", lambda: [name for name in os.listdir(data) if name != "work"])
if os.environ.get("DB"):
    attempt("database", lambda: read(os.environ["DB"]))
attempt("other run's console", lambda: read(f"{data}/runs/{other}/logs/std_log.txt"))
attempt("other run's work dir", lambda: read(f"{data}/work/{other}/secret-notes.txt"))
attempt("studio source", lambda: read(os.environ["SOURCE"] + "/studio/settings.py"))
try:  # in the sandbox this lands in a throwaway tmpfs: the test checks the real source tree from outside
    open(os.environ["SOURCE"] + "/pwned.txt", "w").write("x")
except OSError:
    pass
attempt("redis read", lambda: redis_says("KEYS *"))
attempt("redis flush", lambda: redis_says("FLUSHDB"))
attempt("redis config", lambda: redis_says("CONFIG SET dir /root", "SAVE"))
attempt("redis inject", lambda: redis_says(f"XADD studio:run:{other}:live * k log s out t injected"))
attempt("environment secrets", lambda: [k for k in os.environ if "SECRET" in k or "REDIS" in k or "DATABASE" in k])

def studio_process_environment():
    workers = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"celery" in read(f"/proc/{pid}/cmdline"):
                workers.append(pid)
        except OSError:
            continue
    return [read(f"/proc/{pid}/environ") for pid in workers]

attempt("studio processes", studio_process_environment)
print("line 1", flush=True)
"""


@pytest.fixture(params=["sandbox", "user"])
def isolated_stack(request, e2e_env, studio_services):
    if request.param == "user" and not is_root():
        pytest.skip("a user id per run needs the studio to run as root")
    secret_key = studio_services["data_dir"] / "secret_key"
    if not secret_key.exists():  # what a real installation has: the key made once, 0600
        secret_key.write_text(settings.SECRET_KEY)
        secret_key.chmod(0o600)
    modes = {}
    if request.param == "user":  # what `prepare` does at a start in this mode; put back afterwards
        from studio.sandbox import hide_source

        modes = {path: path.stat().st_mode & 0o777 for path in [ROOT, *ROOT.iterdir()] if not path.is_symlink()}
        hide_source()
    running = SupervisedStack(e2e_env, studio_services["data_dir"], concurrency=2,
                              extra_env={"STUDIO_LOCAL_ISOLATION": request.param})
    yield running
    running.stop()
    for path, mode in modes.items():
        path.chmod(mode)


def test_a_script_cannot_read_the_studios_secrets_other_runs_or_talk_to_redis(isolated_stack, token):
    stack = isolated_stack
    victim = stack.submit(token, VICTIM)
    wait_lines(victim, 1)
    data = settings.DATA_DIR
    env_vars = f"DATA={data}\nOTHER={victim}\nKV_PORT={stack.redis_port}\nSOURCE={ROOT}\nDB={database_file()}"
    attacker = stack.submit(token, ATTACK, env_vars=env_vars)
    run = wait_final(attacker, stack=stack)
    assert run.status == RunStatus.COMPLETED, run.reason
    console = storage.console_log_path(attacker).read_text()
    got = re.findall(r"^GOT .*$", console, re.M)
    assert got == [], console
    refused = re.findall(r"^REFUSED ([^:]+):", console, re.M)
    expected = ["secret key", "redis password", "data dir listing", "other run's console", "other run's work dir",
                "studio source", "redis read", "redis flush", "redis config", "redis inject",
                "environment secrets", "studio processes"]
    if database_file():
        expected.insert(3, "database")
    assert refused == expected, console
    assert "NOAUTH" in console  # Redis answered, and wanted its password
    assert not (ROOT / "pwned.txt").exists()
    assert stack.redis().dbsize() > 0  # nothing was flushed
    assert settings.SECRET_KEY not in console
    assert stack.password not in console
