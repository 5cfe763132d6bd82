"""First start of a fresh clone: `python3 studioctl.py start` until it prints "Studio is running", twice.

    python3 bench/first_start.py            # --keep --python python3 --timeout 600 --worktree

A newcomer's path, measured: `git clone` of this repository into a temporary folder (not timed), then
`python3 studioctl.py start` in it until "Studio is running" appears (the web server answers by then, and the static
files its sign-in page links: checked), then Ctrl-C (SIGINT) and its stop timed, then a second start (everything
already set up) the same way. uv's package cache is left as it is (warm when anything here installed the same
packages before); the clone gets its own virtualenv, data dir and free ports (web, gateway, Redis), so a studio
already running here is not disturbed. Every line the start prints is shown with the time it appeared, which splits
the first start into its phases (virtualenv, install, migrate and bootstrap, collectstatic, processes up). Targets:
first start under 45 s, second under 5 s.

`--worktree` copies this checkout's uncommitted changes and untracked files over the clone (what is being worked on,
not what is committed). Standard library only. The temporary folder is removed at the end (kept with --keep or after a
failure).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = "Studio is running"
TARGETS = {"first": 45.0, "second": 5.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def system_python() -> str:
    """The `python3` a newcomer would type (not this checkout's virtualenv)."""
    venv_bin = str(ROOT / ".venv" / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return shutil.which("python3", path=path) or getattr(sys, "_base_executable", sys.executable)


def clone(target: Path, worktree: bool) -> None:
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True)
    if not worktree:
        return
    listed = subprocess.run(["git", "ls-files", "-z", "--modified", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.split(b"\0")
    for name in filter(None, (item.decode() for item in listed)):
        source, dest = ROOT / name, target / name
        if source.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
        elif not source.exists():  # deleted here
            dest.unlink(missing_ok=True)


def clean_env(ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STUDIO_", "DJANGO_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH", "DATABASE_URL")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != str(ROOT / ".venv" / "bin"))
    env.update({name: str(port) for name, port in ports.items()})
    return env


def web_answers(url: str) -> bool:
    """The sign-in page answers, and so do the static files it links (collected, with hashed names)."""
    try:
        with urllib.request.urlopen(f"{url}/accounts/login/", timeout=2) as response:
            page = response.read().decode()
        linked = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)
        for path in linked:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:
                response.read()
        return bool(linked)
    except OSError:
        return False


class Start:
    """One `studioctl.py start`: its printed lines with their times, until READY (or the process ends)."""

    def __init__(self, python: str, clone_dir: Path, env: dict[str, str]):
        self.lines: list[tuple[float, str]] = []
        self.ready = threading.Event()
        self.began = time.monotonic()
        self.process = subprocess.Popen([python, "studioctl.py", "start"], cwd=clone_dir, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append((time.monotonic() - self.began, line.rstrip("\n")))
            if READY in line:
                self.ready.set()
        self.ready.set()  # ended without it

    def wait_ready(self, timeout: float) -> float | None:
        self.ready.wait(timeout)
        ready = [at for at, line in self.lines if READY in line]
        return ready[0] if ready else None

    def stop(self) -> float:
        """Ctrl-C (SIGINT to the start command, as a terminal sends it) and the seconds until it exited."""
        began = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: only what this bench started
            self.process.wait()
        self.reader.join(timeout=5)
        return time.monotonic() - began

    def show(self, title: str) -> None:
        print(f"--- {title}: what it printed, with seconds since the command started")
        for at, line in self.lines:
            print(f"{at:7.2f}  {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=system_python(), help="the interpreter that runs studioctl.py")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--worktree", action="store_true", help="include this checkout's uncommitted changes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    print(f"# python3 bench/first_start.py{' --worktree' if args.worktree else ''}  (studioctl run by {args.python})")
    folder = Path(tempfile.mkdtemp(prefix="studio-first-start-"))
    clone_dir = folder / "studio"
    ports = {"STUDIO_PORT": free_port(), "STUDIO_GATEWAY_PORT": free_port(), "STUDIO_REDIS_PORT": free_port()}
    url = f"http://127.0.0.1:{ports['STUDIO_PORT']}"
    env = clean_env(ports)
    results, ok, current = {}, True, None
    try:
        began = time.monotonic()
        clone(clone_dir, args.worktree)
        print(f"cloned into {clone_dir} in {time.monotonic() - began:.1f} s (not counted)")
        for name in ("first", "second"):
            current = Start(args.python, clone_dir, env)
            ready = current.wait_ready(args.timeout)
            answered = ready is not None and web_answers(url)
            stopped = current.stop()
            exit_code = current.process.returncode
            current.show(f"{name} start")
            current = None
            if ready is None or not answered:
                print(f"{name} start: no '{READY}' within {args.timeout:.0f} s, or the web server did not answer")
                ok = False
                break
            results[name] = ready
            print(f"{name} start: ready in {ready:.1f} s (web answered); Ctrl-C stopped it in {stopped:.1f} s "
                  f"(exit {exit_code})")
    except KeyboardInterrupt:
        ok = False
    finally:
        if current is not None:
            current.stop()
        if ok and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"kept {folder}")
    if not results:
        return 1
    verdicts = [f"{name} {at:.1f} s (target under {TARGETS[name]:.0f} s: {'PASS' if at < TARGETS[name] else 'FAIL'})"
                for name, at in results.items()]
    print("; ".join(verdicts))
    return 0 if ok and all(at < TARGETS[name] for name, at in results.items()) else 1


if __name__ == "__main__":
    sys.exit(main())
