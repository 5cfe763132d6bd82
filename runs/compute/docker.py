"""Docker compute: the run's container is made from the environment's image, the snapshot is copied in (no bind
mounts, so remote engines work), the console is streamed live, ./outputs and ./logs are copied out at the end.

Containers are named `studio-<instance>-run-<id>` and labelled `studio.run=<id>` and `studio.instance`, so a retry
or a restarted worker finds and removes a stale one instead of starting a second, and studios sharing an engine
never touch each other's. Nothing of the studio goes in: no Docker socket, no database,
no Redis; the script reaches only the studio's API, at the target's callback URL.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import threading
from pathlib import Path

import docker
from django.conf import settings

from studio.docker_engine import client_for

WORKSPACE = "/workspace"
SDK_DIR = "/opt/studio-sdk"
READ_CHUNK = 64 * 1024
CONTROL_TIMEOUT_SECONDS = 300
STREAM_TIMEOUT_SECONDS = 30 * 24 * 3600  # the console and the wait last as long as the run


def container_name(run_id: int) -> str:
    """Named by installation and run: a retry finds its stale container, and studios sharing an engine never meet."""
    return f"studio-{settings.STUDIO_INSTANCE_ID}-run-{int(run_id)}"


def labels(run_id: int) -> dict[str, str]:
    return {"studio.run": str(run_id), "studio.instance": settings.STUDIO_INSTANCE_ID}


class LineSplitter:
    """Turns a byte stream into lines (or 64 KiB pieces of very long ones) for the console sink."""

    def __init__(self, source: str, sink):
        self.source, self.sink, self.buffer = source, sink, b""

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            newline = self.buffer.find(b"\n")
            if newline < 0:
                if len(self.buffer) >= READ_CHUNK:
                    self.sink.feed(self.source, self.buffer[:READ_CHUNK])
                    self.buffer = self.buffer[READ_CHUNK:]
                    continue
                return
            line, self.buffer = self.buffer[: newline + 1], self.buffer[newline + 1 :]
            while len(line) > READ_CHUNK:
                self.sink.feed(self.source, line[:READ_CHUNK])
                line = line[READ_CHUNK:]
            self.sink.feed(self.source, line)

    def close(self) -> None:
        if self.buffer:
            self.sink.feed(self.source, self.buffer)
            self.buffer = b""


class DockerProcess:
    """A run's container. `client` bounds every call by a timeout; `stream_client` has none, for the console and the
    wait, which last as long as the run."""

    def __init__(self, client: docker.DockerClient, container, stream_client: docker.DockerClient):
        self.client = client
        self.stream_client = stream_client
        self.container = container
        self.exit_code: int | None = None
        self.oom_killed = False
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []

    pid = 0  # the process lives in the container; system metrics come from the engine's stats

    def attach(self):
        """Attach to the console before the container starts (attaching to one that already ended would block)."""
        return self.stream_client.api.attach(
            self.container.id, stdout=True, stderr=True, stream=True, logs=True, demux=True
        )

    def watch(self, console, sink) -> None:
        reader = threading.Thread(target=self._read_console, args=(console, sink), daemon=True)
        waiter = threading.Thread(target=self._wait, daemon=True)
        self._threads = [reader, waiter]
        reader.start()
        waiter.start()

    def _read_console(self, console, sink) -> None:
        splitters = {"out": LineSplitter("out", sink), "err": LineSplitter("err", sink)}
        for out, err in console:
            if out:
                splitters["out"].feed(out)
            if err:
                splitters["err"].feed(err)
        for splitter in splitters.values():
            splitter.close()

    def _wait(self) -> None:
        try:
            result = self.stream_client.api.wait(self.container.id)
            self.exit_code = int(result.get("StatusCode", -1))
            self.container.reload()
            self.oom_killed = bool(self.container.attrs.get("State", {}).get("OOMKilled"))
        except docker.errors.DockerException:
            self.exit_code = -1
        finally:
            self._done.set()

    def poll(self) -> int | None:
        return self.exit_code if self._done.is_set() else None

    def terminate(self, grace_seconds: float) -> int:
        with contextlib.suppress(docker.errors.NotFound):
            self.container.stop(timeout=max(1, int(grace_seconds)))
        return self.wait()

    def wait(self) -> int:
        self._done.wait()
        for thread in self._threads:
            thread.join(timeout=10)
        return self.exit_code if self.exit_code is not None else -1

    def sample(self) -> dict[str, float]:
        """CPU % and memory of the container, from the engine's stats."""
        try:
            stats = self.container.stats(stream=False)
        except docker.errors.DockerException:
            return {}
        cpu, pre = stats.get("cpu_stats", {}), stats.get("precpu_stats", {})
        cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
        system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        cpus = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
        values = {"sys/memory_rss_mb": stats.get("memory_stats", {}).get("usage", 0) / (1024 * 1024)}
        if system_delta > 0:
            values["sys/cpu_percent"] = cpu_delta / system_delta * cpus * 100.0
        return values

    def copy_out(self, workdir: Path) -> None:
        """Copy ./outputs and ./logs out of the container into workdir (regular files only, paths checked)."""
        for folder in ("outputs", "logs"):
            try:
                stream, _ = self.container.get_archive(f"{WORKSPACE}/{folder}")
            except docker.errors.NotFound:
                continue
            extract_regular_files(b"".join(stream), workdir)

    def remove(self) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.container.remove(force=True)
        self.client.close()
        self.stream_client.close()


def extract_regular_files(tar_bytes: bytes, dest: Path) -> None:
    """Extract only regular files whose paths stay inside dest; links, devices and escapes are skipped."""
    root = dest.resolve()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as archive:
        for member in archive:
            if not member.isfile():
                continue
            target = (root / member.name).resolve()
            if not target.is_relative_to(root) or "\\" in member.name:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            with open(target, "wb") as handle:
                while chunk := source.read(1024 * 1024):
                    handle.write(chunk)


def workspace_archive(workdir: Path, sdk_path: Path) -> bytes:
    """A tar of the working directory as /workspace and the SDK as /opt/studio-sdk (no links followed)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        _add_tree(archive, workdir, WORKSPACE.lstrip("/"))
        _add_tree(archive, sdk_path / "studio_sdk", f"{SDK_DIR.lstrip('/')}/studio_sdk")
    return buffer.getvalue()


def _add_tree(archive: tarfile.TarFile, source: Path, arcname: str) -> None:
    info = tarfile.TarInfo(arcname)
    info.type, info.mode = tarfile.DIRTYPE, 0o777
    archive.addfile(info)
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        relative = Path(dirpath).relative_to(source)
        for name in dirnames:
            info = tarfile.TarInfo(f"{arcname}/{(relative / name).as_posix()}")
            info.type, info.mode = tarfile.DIRTYPE, 0o777
            archive.addfile(info)
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            info = archive.gettarinfo(str(path), arcname=f"{arcname}/{(relative / name).as_posix()}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as handle:
                archive.addfile(info, handle)


class DockerDriver:
    def __init__(self, target):
        self.target = target

    def launch(self, *, argv, workdir, env, sink, user="", spec=None) -> DockerProcess:
        """Start the run's container; `spec` carries run_id, image, sdk_path and resources."""
        client = client_for(self.target, timeout=CONTROL_TIMEOUT_SECONDS)
        name = container_name(spec.run_id)
        remove_stale(client, name)
        resources = spec.resources
        kwargs = {
            "name": name,
            "labels": labels(spec.run_id),
            "environment": env,
            "working_dir": WORKSPACE,
            "extra_hosts": {"host.docker.internal": "host-gateway"},
            "stdin_open": False,
            "tty": False,
        }
        if resources.get("memory_limit_mb"):
            kwargs["mem_limit"] = f"{int(resources['memory_limit_mb'])}m"
            kwargs["memswap_limit"] = kwargs["mem_limit"]  # no swap beyond the limit: over it means killed
        if resources.get("cpu_limit"):
            kwargs["nano_cpus"] = int(float(resources["cpu_limit"]) * 1e9)
        if resources.get("shm_size_mb"):
            kwargs["shm_size"] = f"{int(resources['shm_size_mb'])}m"
        gpus = str(resources.get("gpus") or "")
        if gpus:
            count = -1 if gpus == "all" else int(gpus)
            kwargs["device_requests"] = [docker.types.DeviceRequest(count=count, capabilities=[["gpu"]])]
        try:
            container = client.containers.create(spec.image, command=argv, **kwargs)
        except docker.errors.DockerException:
            client.close()
            raise
        process = DockerProcess(client, container, client_for(self.target, timeout=STREAM_TIMEOUT_SECONDS))
        try:
            container.put_archive("/", workspace_archive(workdir, spec.sdk_path))
            console = process.attach()
            container.start()
        except docker.errors.DockerException:
            process.remove()
            raise
        process.watch(console, sink)
        return process


def remove_stale(client, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)


def remove_finished_containers(client, finished_run_ids: set[int]) -> int:
    """Remove containers labelled with a finished run (the beat task's clean-up)."""
    removed = 0
    mine = f"studio.instance={settings.STUDIO_INSTANCE_ID}"
    for container in client.containers.list(all=True, filters={"label": ["studio.run", mine]}):
        try:
            run_id = int(container.labels.get("studio.run", ""))
        except ValueError:
            continue
        if run_id in finished_run_ids:
            container.remove(force=True)
            removed += 1
    return removed
