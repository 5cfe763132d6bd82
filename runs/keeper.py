"""The keeper of a local run: a small process between the worker and the user's script, so the script outlives the
worker that started it.

    python -m runs.keeper <spec.json>

The worker starts it in a session of its own and may die at any moment; the keeper does not care. It starts the
script (as the run's user, or in its sandbox: the spec's argv says how), owns its stdout and stderr, and:

- appends every byte the script prints to the run's console log, whoever watches (a worker that comes back reads the
  log from where it stopped, so the live view resumes and nothing is lost);
- records where each stderr line starts (`err_index`, one decimal offset a line), so the live view can tell the two
  streams apart;
- writes `state.json` when the script started (its pid, the keeper's pid, the host) and `exit.json` when it ended
  (exit code, the last stderr lines, and what could not be written to the log, if anything);
- on SIGTERM (a cancel), passes SIGTERM to the script's processes, and SIGKILL after the spec's grace period;
- exits with the script's exit code (128 + N when a signal N ended it).

Standard library only, and nothing of the studio's settings: it must start fast, and it holds no secret.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

READ_CHUNK = 64 * 1024
STDERR_TAIL_LINES = 15


def write_json(path: Path, data: dict) -> bool:
    """Write atomically (a reader never sees half a file); False when it could not be written (a full disk)."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "w") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()
        return False


class Console:
    """The run's console log, appended to by both pumps under one lock so each line's offset is known."""

    def __init__(self, log_path: Path, err_index_path: Path):
        self.lock = threading.Lock()
        self.log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.err_fd = os.open(err_index_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.lost_bytes = 0
        self.lost_lines = 0
        self.error = ""
        self._err_continuing = False

    def write(self, source: str, chunk: bytes) -> None:
        with self.lock:
            written = 0
            try:
                offset = os.lseek(self.log_fd, 0, os.SEEK_END)
                written = os.write(self.log_fd, chunk)
                if written < len(chunk):  # the disk filled up in the middle of it
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                if source == "err" and not self._err_continuing:
                    os.write(self.err_fd, f"{offset}\n".encode())
            except OSError as error:
                self.lost_bytes += len(chunk) - written
                self.lost_lines += chunk[written:].count(b"\n") or 1
                self.error = self.error or (error.strerror or str(error))
            if source == "err":
                if not self._err_continuing:
                    self.stderr_tail.append(chunk[:4096].decode("utf-8", "replace").rstrip("\r\n"))
                self._err_continuing = not chunk.endswith(b"\n")


def pump(stream, source: str, console: Console) -> None:
    with stream:
        while chunk := stream.readline(READ_CHUNK):
            console.write(source, chunk)


def descendants(root: int) -> list[int]:
    """Every process below `root`, read from /proc (the script's processes inside a sandbox)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            children[int(fields[1])].append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


class Keeper:
    def __init__(self, spec: dict):
        self.spec = spec
        self.folder = Path(spec["folder"])
        self.stopping = threading.Event()

    def run(self) -> int:
        spec = self.spec
        console = Console(Path(spec["log"]), Path(spec["err_index"]))
        info_read, info_write = os.pipe()  # a sandbox (bwrap --info-fd) says here which pid runs the script
        identity = {}
        if spec.get("uid") is not None:
            identity = {"user": spec["uid"], "group": spec["gid"], "extra_groups": []}
        argv = [part.replace("{info_fd}", str(info_write)) for part in spec["argv"]]
        try:
            child = subprocess.Popen(  # noqa: S603 - argv is a list, never a shell string
                argv, cwd=spec["cwd"], env=spec["env"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, close_fds=True, pass_fds=(info_write,), **identity,
            )
        except OSError as error:
            write_json(self.folder / "exit.json", {"exit_code": None, "launch_error": f"{argv[0]}: {error.strerror}"})
            return 127
        os.close(info_write)
        self.child = child
        self.sandbox_init = self._sandbox_init(info_read, bool(spec.get("sandboxed")))
        write_json(self.folder / "state.json", {
            "keeper_pid": os.getpid(), "child_pid": child.pid, "sandbox_pid": self.sandbox_init,
            "host": socket.gethostname(), "started_at": time.time(),
        })
        signal.signal(signal.SIGTERM, self._on_term)
        pumps = [threading.Thread(target=pump, args=(child.stdout, "out", console), daemon=True),
                 threading.Thread(target=pump, args=(child.stderr, "err", console), daemon=True)]
        for thread in pumps:
            thread.start()
        code = child.wait()
        for thread in pumps:
            thread.join(timeout=30)
        exit_code = code if code >= 0 else 128 - code
        write_json(self.folder / "exit.json", {
            "exit_code": exit_code, "stderr_tail": list(console.stderr_tail), "log_lost_bytes": console.lost_bytes,
            "log_lost_lines": console.lost_lines, "log_error": console.error, "ended_at": time.time(),
            "stopped": self.stopping.is_set(),
        })
        return exit_code

    def _sandbox_init(self, info_read: int, sandboxed: bool) -> int | None:
        with os.fdopen(info_read, "rb") as info:
            if not sandboxed:
                return None
            data = info.read(4096)  # bwrap writes its JSON and closes the descriptor once the sandbox runs
        try:
            return int(json.loads(data)["child-pid"])
        except (ValueError, KeyError, TypeError):
            return None

    def _on_term(self, signum, frame) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            threading.Thread(target=self._stop, daemon=True).start()

    def _stop(self) -> None:
        """SIGTERM to the script's processes (it may flush what it logs), SIGKILL to all of them after the grace."""
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + float(self.spec.get("grace_seconds", 5))
        while time.monotonic() < deadline and self.child.poll() is None:
            time.sleep(0.05)
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.sandbox_init is not None:  # inside a sandbox: the processes below its init, and the init to kill
            targets = descendants(self.sandbox_init) + ([self.sandbox_init] if sig == signal.SIGKILL else [])
            for pid in targets:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    continue
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.child.pid, sig)


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the studio's terminal is for the studio, not the run
    return Keeper(spec).run()


if __name__ == "__main__":
    sys.exit(main())
