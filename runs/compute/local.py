"""Local compute: the script runs on the worker's machine, under its keeper (`runs/keeper.py`), isolated as
`studio/sandbox.py` says.

The worker starts the keeper in a session of its own and watches it through files in the run's storage
(`state.json`, `exit.json`); the keeper writes the console log itself. So the script outlives the worker: another
worker (or the same one, restarted) adopts it from those files, follows its log from where the last follower stopped,
and learns its exit code even when it ended while nobody watched.

The placement is the target's interpreter (or a user-managed environment's), or a virtualenv made once per managed
environment definition (`environments/venvs.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

from environments import venvs
from environments.models import EnvironmentKind
from runs import sysmetrics
from runs.compute.base import (
    COLLECTED_DIRS,
    BaseEnvironment,
    Console,
    LaunchError,
    LaunchSpec,
    Placement,
    PlacementError,
)
from studio import live, sandbox
from studio.console import LogFollower

KEEPER = Path(__file__).resolve().parent.parent / "keeper.py"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
STARTED_TIMEOUT_SECONDS = 30
ERR_INDEX = "stderr.offsets"
STOP_MARGIN_SECONDS = 10


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    """A running process (a zombie nobody reaped counts as gone)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def published_key(console: Console) -> str:
    """Where a follower notes how far into the log it published, so the next one starts there."""
    return f"{console.stream_key}:published"


def _follow(console: Console, offset: int) -> LogFollower:
    """Publish the log from `offset`, noting how far with each batch (atomically), so a successor resumes there."""
    return LogFollower(console.stream_key, console.log, console.state / ERR_INDEX, offset, published_key(console))


class KeptProcess:
    """A local run's script, watched through its keeper's files. Leaving the `with` block stops it unless released."""

    oom_killed = False

    def __init__(self, console: Console, workdir: Path, follower: LogFollower, keeper: subprocess.Popen | None):
        self.console = console
        self.folder = console.state
        self.workdir = workdir
        self.follower = follower
        self.keeper = keeper  # our child when this worker started it; None when adopted
        self.state = _read_json(self.folder / "state.json") or {}
        self.ended: dict | None = None
        self._released = False
        self._sampler = sysmetrics.ProcessTreeSampler(self.state["child_pid"]) if self.state.get("child_pid") else None

    def __enter__(self) -> KeptProcess:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None and not issubclass(exc_type, Exception):
            self.release()  # the worker is shutting down (SystemExit): the script goes on, and is adopted
        if not self._released and self.poll() is None:
            self.terminate(0)
        self.follower.stop()

    def release(self) -> None:
        self._released = True

    @property
    def pid(self) -> int:
        return int(self.state.get("child_pid") or 0)

    def poll(self) -> int | None:
        if self.ended is None:
            self.ended = self._ended()
        if self.ended is None:
            return None
        code = self.ended.get("exit_code")
        return -1 if code is None else int(code)

    def _ended(self) -> dict | None:
        recorded = _read_json(self.folder / "exit.json")
        if recorded is not None:
            return recorded
        if self.keeper is not None:
            code = self.keeper.poll()
            if code is None:
                return None
            # The keeper ended without its exit file (a full disk): its own exit code is the script's.
            return _read_json(self.folder / "exit.json") or {"exit_code": code, "exit_file_missing": True}
        if _alive(self.state.get("keeper_pid")):
            return None
        return _read_json(self.folder / "exit.json") or {"exit_code": None, "lost": True}

    def wait(self) -> int:
        while (code := self.poll()) is None:
            time.sleep(0.05)
        return code

    def terminate(self, grace_seconds: float) -> int:
        """Ask the keeper to stop the script (SIGTERM, SIGKILL after the grace); kill everything if it cannot."""
        with contextlib.suppress(ProcessLookupError, PermissionError, KeyError):
            os.kill(int(self.state["keeper_pid"]), signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds + STOP_MARGIN_SECONDS
        while time.monotonic() < deadline and self.poll() is None:
            time.sleep(0.05)
        if self.poll() is None:  # the keeper does not answer: end the script and the keeper ourselves
            for pid in (self.state.get("sandbox_pid"), self.state.get("child_pid")):
                with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
                    os.killpg(int(pid), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError, KeyError):
                os.kill(int(self.state["keeper_pid"]), signal.SIGKILL)
        return self.wait()

    def sample(self) -> dict[str, float]:
        return self._sampler.sample() if self._sampler is not None else {}

    def stderr_tail(self) -> list[str]:
        return list((self.ended or {}).get("stderr_tail") or [])

    def console_note(self) -> str:
        ended = self.ended or {}
        notes = []
        if ended.get("log_lost_bytes"):
            notes.append(f"{ended['log_lost_bytes']:,} bytes ({ended.get('log_lost_lines', 0):,} lines) of console "
                         f"output could not be written to the log file ({ended.get('log_error') or 'write failed'}).")
        if ended.get("exit_file_missing"):
            notes.append("The run's keeper could not record how the script ended (its storage is full?).")
        if ended.get("lost"):
            notes.append("The script's keeper stopped without recording how the script ended.")
        return " ".join(notes)

    def collect(self, outputs) -> None:
        """Hand every regular file under ./outputs and ./logs to `outputs` (links are never followed)."""
        for top in COLLECTED_DIRS:
            source_root = self.workdir / top
            if not source_root.is_dir() or source_root.is_symlink():
                continue
            for dirpath, dirnames, filenames in os.walk(source_root, followlinks=False):
                dirnames.sort()
                for filename in sorted(filenames):
                    source = Path(dirpath) / filename
                    relative = source.relative_to(self.workdir).as_posix()
                    try:
                        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                    except OSError:
                        outputs.skip(relative, "not a regular file")
                        continue
                    with os.fdopen(fd, "rb") as handle:
                        info = os.fstat(handle.fileno())
                        if not stat.S_ISREG(info.st_mode):
                            outputs.skip(relative, "not a regular file")
                            continue
                        outputs.add(relative, handle, info.st_size)


class LocalProcessDriver:
    def __init__(self, target):
        self.target = target

    def prepare(self, run, stop_check) -> Placement:
        environment = run.environment
        if environment is None or environment.kind == EnvironmentKind.USER_MANAGED:
            interpreter = (environment.interpreter_path if environment else "") or self.target.python_path
            return Placement(python=interpreter or sandbox.run_python())
        try:
            return Placement(python=venvs.ensure_venv(environment, base_python=sandbox.run_python()))
        except venvs.VenvError as error:
            raise PlacementError(str(error)) from None

    def base_environment(self, placement: Placement, workdir: Path) -> BaseEnvironment:
        variables = {"PATH": f"{Path(placement.python).parent}:{SAFE_PATH}", "HOME": str(workdir),
                     "TMPDIR": str(workdir / ".tmp"), "USER": "studio-run", "LOGNAME": "studio-run"}
        return BaseEnvironment(variables, str(settings.STUDIO_SDK_PATH), settings.STUDIO_PUBLIC_URL)

    def launch(self, spec: LaunchSpec) -> KeptProcess:
        """Start the script under its keeper, as the run's own user or in its sandbox."""
        folder = spec.console.state
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("state.json", "exit.json", ERR_INDEX):
            (folder / name).unlink(missing_ok=True)
        try:
            uid, gid = sandbox.run_identity(spec.run_id)
        except KeyError:
            raise LaunchError(f"STUDIO_LOCAL_RUN_USER names {settings.STUDIO_LOCAL_RUN_USER!r}, which is not a user "
                              "on this machine.") from None
        if uid is not None:
            give_to_user(spec.workdir, uid, gid)
        keeper_spec = {
            "folder": str(folder), "log": str(spec.console.log), "err_index": str(folder / ERR_INDEX),
            "cwd": str(spec.workdir), "env": spec.env,
            "argv": sandbox.wrap(spec.argv, workdir=spec.workdir, python=spec.placement.python),
            "sandboxed": sandbox.isolation().mode == "sandbox", "uid": uid, "gid": gid,
            "grace_seconds": spec.grace_seconds,
        }
        spec_path = folder / "spec.json"
        fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(keeper_spec, handle)
        with open(folder / "keeper.log", "ab") as keeper_log:
            keeper = subprocess.Popen(  # noqa: S603 - a list argv, the studio's own interpreter and file
                [sys.executable, str(KEEPER), str(spec_path)], stdin=subprocess.DEVNULL, stdout=keeper_log,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                env={"PATH": SAFE_PATH, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
            )
        deadline = time.monotonic() + STARTED_TIMEOUT_SECONDS
        while not (folder / "state.json").exists():
            ended = _read_json(folder / "exit.json")
            if ended is not None and ended.get("launch_error"):
                keeper.wait()
                raise LaunchError(f"Could not start {ended['launch_error']}.")
            if keeper.poll() is not None and not (folder / "state.json").exists():
                raise LaunchError(f"The run's keeper exited ({keeper.returncode}) before starting the script: "
                                  f"{(folder / 'keeper.log').read_text(errors='replace')[-500:]}")
            if time.monotonic() > deadline:
                keeper.kill()
                raise LaunchError("The run's keeper did not start the script within 30 s.")
            time.sleep(0.002)
        return KeptProcess(spec.console, spec.workdir, _follow(spec.console, 0), keeper)

    def adopt(self, run_id: int, workdir: Path, console: Console) -> KeptProcess | None:
        """The script a worker started and no longer watches, found by its keeper's files; None when it is gone."""
        state = _read_json(console.state / "state.json")
        if state is None:
            return None
        try:
            offset = int(live.get_signal(published_key(console)) or 0)
        except Exception:  # Redis down: publish from where the log is now (it keeps every line anyway)
            offset = console.log.stat().st_size if console.log.exists() else 0
        return KeptProcess(console, workdir, _follow(console, offset), keeper=None)

    def sweep(self, finished) -> int:
        return 0  # a local run's keeper ends with its script


def give_to_user(root: Path, uid: int, gid: int) -> None:
    """Hand the working directory to the user that runs the script (0700: no other run can look in)."""
    os.chown(root, uid, gid)
    os.chmod(root, 0o700)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
