"""Local compute: the script runs as a child process in its own process group."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import threading
import time
from pathlib import Path

READ_CHUNK = 64 * 1024


class LocalProcess:
    def __init__(self, popen: subprocess.Popen, readers: list[threading.Thread]):
        self.popen = popen
        self.readers = readers

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

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
            os.killpg(self.popen.pid, sig)


class LocalProcessDriver:
    def launch(self, *, argv: list[str], workdir: Path, env: dict[str, str], sink, user: str = "", spec=None) -> LocalProcess:
        """Start argv in workdir; with `user`, as that OS user (its own uid and group, no extra groups)."""
        identity = {}
        if user:
            record = pwd.getpwnam(user)
            identity = {"user": record.pw_uid, "group": record.pw_gid, "extra_groups": []}
        popen = subprocess.Popen(  # noqa: S603 - argv is a list, never a shell string
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            **identity,
        )
        readers = [
            threading.Thread(target=_pump, args=(popen.stdout, "out", sink), daemon=True),
            threading.Thread(target=_pump, args=(popen.stderr, "err", sink), daemon=True),
        ]
        for reader in readers:
            reader.start()
        return LocalProcess(popen, readers)


def _pump(stream, source: str, sink) -> None:
    """Hand the sink each line (or, for very long lines, 64 KiB pieces of it) as soon as it is read."""
    with stream:
        while True:
            chunk = stream.readline(READ_CHUNK)
            if not chunk:
                break
            sink.feed(source, chunk)
