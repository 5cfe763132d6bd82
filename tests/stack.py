"""The studio as `studioctl.py start` runs it, for fault tests and the recovery bench: supervisord with the embedded
Redis (password, append-only file), the web server (`studio.serve`), the run worker, the control worker and beat,
from the same configuration the start command writes, against the given database and data dir.

Faults are injected into the real processes: `kill("worker")` sends SIGKILL to the worker's main process (supervisord
starts a new one), `pid_of("web")`, `supervisorctl("stop", "worker")`, and so on.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from tests.services import ROOT, free_port, kill_local_instances, wait_until


def _studioctl():
    spec = importlib.util.spec_from_file_location("studioctl_for_tests", ROOT / "studioctl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.PY = Path(sys.executable)  # the interpreter running the tests has every requirement
    return module


class SupervisedStack:
    def __init__(self, env: dict[str, str], data_dir: Path, *, queues: str = "studio,local,builds",
                 concurrency: int = 2, extra_env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.port = free_port()
        self.redis_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {key: value for key, value in env.items() if key != "STUDIO_REDIS_URL"}
        self.env.update({
            "STUDIO_REDIS_PORT": str(self.redis_port), "STUDIO_PORT": str(self.port),
            "STUDIO_GATEWAY_PORT": str(free_port()), "STUDIO_PUBLIC_URL": self.url,
            "STUDIO_RUN_HEARTBEAT_SECONDS": "1", "STUDIO_RUN_LOST_AFTER_SECONDS": "3", "STUDIO_REAP_SECONDS": "1",
            "STUDIO_SYSTEM_METRICS_SECONDS": "1", "STUDIO_REQUEUE_AFTER_SECONDS": "2", "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            **(extra_env or {}),
        })
        self.env.pop("STUDIO_CONTAINER_API_URL", None)  # derived from STUDIO_PORT, as in a real start
        studioctl = self.studioctl = _studioctl()
        self.state = data_dir.parent / f"supervised-{self.port}"  # socket, logs, Redis files: this stack's own
        args = argparse.Namespace(host="127.0.0.1", port=self.port, concurrency=concurrency, queues=queues)
        self.conf = studioctl.supervisor_conf(args, self.env, data_dir, self.state)
        self.password = (data_dir / "redis_password").read_text().strip()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)], env=self.env, cwd=ROOT,
            stdout=open(self.state / "logs" / "supervisord.out", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            studioctl.start_programs(self.state, ("web",), self.process)  # as the start command does
            wait_until(self.web_answers, 60, "the supervised web server")
            studioctl.start_the_rest(self.state)
            wait_until(lambda: "ready." in self.log("worker"), 60, "the supervised worker")
            wait_until(lambda: "ready." in self.log("control"), 60, "the supervised control worker")
        except BaseException:
            self.stop()
            raise

    # Looking at it ------------------------------------------------------------------------------------------------
    def log(self, name: str) -> str:
        path = self.state / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        """The end of every program's log, for a failing test's message."""
        return "\n".join(f"--- {name} ---\n{self.log(name)[-3000:]}" for name in ("worker", "control", "beat", "web"))

    def web_answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"supervisord exited:\n{self.logs()}")
        try:
            return httpx.get(f"{self.url}/accounts/login/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def redis(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.redis_port, password=self.password)

    def supervisorctl(self, *command: str) -> str:
        done = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *command],
                              capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=60)
        return done.stdout.strip()

    def pid_of(self, program: str) -> int:
        """The main process of a program, once supervisord says it is running."""
        def running():
            out = self.supervisorctl("pid", program)
            return int(out) if out.isdigit() and int(out) > 0 else 0

        return wait_until(running, 60, f"{program} to run")

    # Faults -------------------------------------------------------------------------------------------------------
    def kill(self, program: str, sig: int = signal.SIGKILL) -> int:
        pid = self.pid_of(program)
        os.kill(pid, sig)
        return pid

    def wait_restarted(self, program: str, old_pid: int, ready: str = "") -> int:
        """supervisord started it again (a new pid); with `ready`, also wait for that text in its log after it."""
        mark = len(self.log(program))
        pid = wait_until(lambda: (lambda p: p if p != old_pid else 0)(self.pid_of(program)), 60,
                         f"{program} to be restarted")
        if ready:
            wait_until(lambda: ready in self.log(program)[mark:], 60, f"{program} to be ready again")
        return pid

    # Using it -----------------------------------------------------------------------------------------------------
    def submit(self, token: str, script: str, *, workspace: str = "lab", experiment: str = "faults",
               compute_target: str = "local", **fields) -> int:
        response = httpx.post(
            f"{self.url}/api/v1/workspaces/{workspace}/runs", headers={"Authorization": f"Token {token}"},
            data={"experiment": experiment, "compute_target": compute_target, **fields},
            files={"source": ("train.py", script.encode(), "text/x-python")}, timeout=30,
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def stop_like_ctrl_c(self) -> None:
        """What `studioctl.py start` does on Ctrl-C."""
        self.studioctl.stop_studio(self.process, self.env)

    def stop(self) -> None:
        try:
            self._stop_supervisor()
        finally:
            kill_local_instances(self.data_dir)

    def _stop_supervisor(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        time.sleep(0.2)
