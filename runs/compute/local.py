"""Local compute: the script runs as a child process of the worker, in its own process group.

The placement is the target's interpreter (or a user-managed environment's), or a virtualenv made once per managed
environment definition (`environments/venvs.py`). With STUDIO_LOCAL_RUN_USER the script runs as that OS user, which
owns the working directory and nothing of the studio's.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

from django.conf import settings

from environments import venvs
from environments.models import EnvironmentKind
from runs import sysmetrics
from runs.compute.base import COLLECTED_DIRS, BaseEnvironment, LaunchError, LaunchSpec, Placement, PlacementError
from studio.console import READ_CHUNK

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


class LocalProcess:
    """The script's process. Leaving the `with` block kills its whole process group if it is still there."""

    oom_killed = False

    def __init__(self, popen: subprocess.Popen, readers: list[threading.Thread], workdir: Path):
        self.popen = popen
        self.readers = readers
        self.workdir = workdir
        self._sampler = sysmetrics.ProcessTreeSampler(popen.pid)

    def __enter__(self) -> LocalProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.popen.poll() is None:
            self.terminate(0)
        self._signal_group(signal.SIGKILL)  # children that outlived the leader
        for stream in (self.popen.stdout, self.popen.stderr):
            with contextlib.suppress(OSError):
                stream.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def terminate(self, grace_seconds: float) -> int:
        """End the whole process group: SIGTERM, then SIGKILL after the grace period."""
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and self.popen.poll() is None:
            time.sleep(0.05)
        # Children may outlive the leader: kill the group either way.
        self._signal_group(signal.SIGKILL)
        return self.wait()

    def wait(self) -> int:
        code = self.popen.wait()
        for reader in self.readers:
            reader.join(timeout=10)
        return code

    def sample(self) -> dict[str, float]:
        return self._sampler.sample()

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

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
            os.killpg(self.popen.pid, sig)


class LocalProcessDriver:
    def __init__(self, target):
        self.target = target

    def prepare(self, run, stop_check) -> Placement:
        environment = run.environment
        if environment is None or environment.kind == EnvironmentKind.USER_MANAGED:
            interpreter = (environment.interpreter_path if environment else "") or self.target.python_path
            return Placement(python=interpreter or settings.STUDIO_LOCAL_PYTHON)
        try:
            return Placement(python=venvs.ensure_venv(environment))
        except venvs.VenvError as error:
            raise PlacementError(str(error)) from None

    def base_environment(self, placement: Placement, workdir: Path) -> BaseEnvironment:
        variables = {"PATH": f"{Path(placement.python).parent}:{SAFE_PATH}", "HOME": str(workdir),
                     "TMPDIR": str(workdir / ".tmp")}
        return BaseEnvironment(variables, str(settings.STUDIO_SDK_PATH), settings.STUDIO_PUBLIC_URL)

    def launch(self, spec: LaunchSpec, sink) -> LocalProcess:
        """Start argv in the working directory; with STUDIO_LOCAL_RUN_USER, as that OS user (its own uid and group, no
        extra groups), who is given the working directory."""
        identity = {}
        user = settings.STUDIO_LOCAL_RUN_USER
        try:
            if user:
                record = pwd.getpwnam(user)
                give_to_user(spec.workdir, record)
                identity = {"user": record.pw_uid, "group": record.pw_gid, "extra_groups": []}
            popen = subprocess.Popen(  # noqa: S603 - argv is a list, never a shell string
                spec.argv,
                cwd=spec.workdir,
                env=spec.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                **identity,
            )
        except KeyError:
            raise LaunchError(f"STUDIO_LOCAL_RUN_USER names {user!r}, which is not a user on this machine.") from None
        except OSError as exc:
            raise LaunchError(f"Could not start {spec.argv[0]}: {exc.strerror}.") from None
        readers = [
            threading.Thread(target=_pump, args=(popen.stdout, "out", sink), daemon=True),
            threading.Thread(target=_pump, args=(popen.stderr, "err", sink), daemon=True),
        ]
        for reader in readers:
            reader.start()
        return LocalProcess(popen, readers, spec.workdir)

    def sweep(self, finished) -> int:
        return 0  # a local run's process ends with its handle


def give_to_user(root: Path, record: pwd.struct_passwd) -> None:
    """Hand the working directory to the OS user that runs the script."""
    os.chown(root, record.pw_uid, record.pw_gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), record.pw_uid, record.pw_gid, follow_symlinks=False)


def _pump(stream, source: str, sink) -> None:
    """Hand the sink each line (or, for very long lines, 64 KiB pieces of it) as soon as it is read."""
    with stream:
        while True:
            chunk = stream.readline(READ_CHUNK)
            if not chunk:
                break
            sink.feed(source, chunk)
