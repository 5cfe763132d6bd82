"""Docker compute: the run's container is made from the environment's image, the working directory is copied in (no
bind mounts, so remote engines work), the console is streamed live, ./outputs and ./logs are streamed out at the end.

Containers are named `studio-<instance>-run-<id>` and labelled `studio.run=<id>` and `studio.instance`, so a retry
or a restarted worker finds and removes a stale one instead of starting a second, and studios sharing an engine
never touch each other's. Nothing of the studio goes in: no Docker socket, no database, no Redis; the script reaches
only the studio's API, at the target's callback URL.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import tarfile
import tempfile
import threading
from pathlib import Path

import docker
from django.conf import settings

from environments import builds
from environments.definition import VENV
from environments.models import EnvironmentKind
from runs.compute.base import (
    COLLECTED_DIRS,
    BaseEnvironment,
    Console,
    LaunchError,
    LaunchSpec,
    Placement,
    PlacementError,
)
from studio.console import ConsoleSink, LineSplitter, catch_up
from studio.docker_engine import EngineError, client_for

WORKSPACE = "/workspace"
SDK_DIR = "/opt/studio-sdk"
CONTROL_TIMEOUT_SECONDS = 300
STREAM_TIMEOUT_SECONDS = 30 * 24 * 3600  # the console and the wait last as long as the run
logger = logging.getLogger(__name__)
SPOOL_BYTES = 16 * 1024 * 1024  # the working directory's tar is kept in memory up to this, then on disk
ARCHIVE_CHUNK = 1024 * 1024
CONTAINER_PATH = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def container_name(run_id: int) -> str:
    """Named by installation and run: a retry finds its stale container, and studios sharing an engine never meet."""
    return f"studio-{settings.STUDIO_INSTANCE_ID}-run-{int(run_id)}"


def labels(run_id: int) -> dict[str, str]:
    return {"studio.run": str(run_id), "studio.instance": settings.STUDIO_INSTANCE_ID}


def _log_frames(response):
    """(stdout, None) or (None, stderr) for each frame of a multiplexed logs response, until it ends."""
    while True:
        header = response.raw.read(8)
        if len(header) < 8:
            return
        stream_id, length = struct.unpack(">BxxxL", header)
        data = response.raw.read(length) if length else b""
        if length and not data:
            return
        yield (None, data) if stream_id == 2 else (data, None)


class DockerProcess:
    """A run's container. `client` bounds every call by a timeout; `stream_client` has none, for the console and the
    wait, which last as long as the run. The console is written to the run's log by a sink of this handle's own.
    Leaving the `with` block removes the container and closes both clients, unless released."""

    def __init__(self, client: docker.DockerClient, container, stream_client: docker.DockerClient, console: Console):
        self.client = client
        self.stream_client = stream_client
        self.container = container
        self.sink = ConsoleSink(console.stream_key, console.log, offset_key=f"{console.stream_key}:published")
        self.exit_code: int | None = None
        self.oom_killed = False
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._released = False

    def __enter__(self) -> DockerProcess:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None and not issubclass(exc_type, Exception):
            self._released = True  # the worker is shutting down (SystemExit): the container goes on, and is adopted
        if self._released:
            self.sink.close()
            self.client.close()
            self.stream_client.close()
        else:
            self.remove()

    def release(self) -> None:
        self._released = True

    def attach(self):
        """The console of a container about to start, from its first byte (attached before it starts)."""
        return self.stream_client.api.attach(self.container.id, stdout=True, stderr=True, stream=True, logs=True,
                                             demux=True)

    def follow_logs(self):
        """The console of a container that is running or ended, from its first byte and following it to the end.

        For a running container, attach with logs=1 replays the stored log and then attaches, and what the
        container prints between the two is in neither (a worker that adopted a busy run missed 132 lines); the
        logs endpoint with follow=1 reads the log driver's file and follows it, so nothing falls between. Its body
        is multiplexed: frames of an 8-byte header (stream, length) and the data."""
        api = self.stream_client.api
        response = api._get(api._url("/containers/{0}/logs", self.container.id),
                            params={"stdout": 1, "stderr": 1, "follow": 1}, stream=True)
        api._raise_for_status(response)
        return _log_frames(response)

    def watch(self, console, skip_bytes: int = 0) -> None:
        reader = threading.Thread(target=self._read_console, args=(console, skip_bytes), daemon=True)
        waiter = threading.Thread(target=self._wait, daemon=True)
        self._threads = [reader, waiter]
        reader.start()
        waiter.start()

    def _read_console(self, console, skip_bytes: int) -> None:
        """Feed the sink; the first `skip_bytes` (written by the worker that watched before) are passed over."""
        splitters = {"out": LineSplitter("out", self.sink), "err": LineSplitter("err", self.sink)}
        with contextlib.suppress(docker.errors.DockerException, OSError):  # the container went away: the wait says how
            for frame in console:
                for source, data in zip(("out", "err"), frame, strict=True):
                    if not data:
                        continue
                    if skip_bytes:
                        skipped = min(skip_bytes, len(data))
                        data, skip_bytes = data[skipped:], skip_bytes - skipped
                    if data:
                        splitters[source].feed(data)
        for splitter in splitters.values():
            splitter.close()

    def _wait(self) -> None:
        try:
            result = self.stream_client.api.wait(self.container.id)
            self.exit_code = int(result.get("StatusCode", -1))
            self.container.reload()
            self.oom_killed = bool(self.container.attrs.get("State", {}).get("OOMKilled"))
        except (docker.errors.DockerException, OSError):
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

    def stderr_tail(self) -> list[str]:
        self.sink.close()  # what is queued is written before the tail is read
        return list(self.sink.stderr_tail)

    def console_note(self) -> str:
        return self.sink.loss_note()

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

    def collect(self, outputs) -> None:
        """Stream ./outputs and ./logs out of the container, one regular file at a time (never the whole archive in
        memory); links, devices and paths that would leave the folder are skipped and said so."""
        for folder in COLLECTED_DIRS:
            try:
                chunks, _ = self.container.get_archive(f"{WORKSPACE}/{folder}", chunk_size=ARCHIVE_CHUNK)
            except docker.errors.NotFound:
                continue
            except docker.errors.DockerException as error:
                outputs.skip(f"{folder}/", f"could not be copied out of the container: {error}")
                continue
            extract_regular_files(ChunkReader(chunks), outputs)

    def remove(self) -> None:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.container.remove(force=True)
        self.sink.close()
        self.client.close()
        self.stream_client.close()


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks, for tarfile's streaming mode."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        count = min(len(target), len(self._buffer))
        target[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count


def extract_regular_files(stream, outputs) -> None:
    """Hand each regular file of a tar stream to `outputs` under its own relative path; skip anything else."""
    with tarfile.open(fileobj=io.BufferedReader(stream, ARCHIVE_CHUNK), mode="r|") as archive:
        for member in archive:
            name = member.name
            parts = [part for part in name.split("/") if part not in ("", ".")]
            if member.isdir():
                continue
            if not member.isfile():
                outputs.skip(name, "not a regular file")
                continue
            if name.startswith("/") or ".." in parts or "\\" in name or not parts or parts[0] not in COLLECTED_DIRS:
                outputs.skip(name[:200], "its path leaves the folder")
                continue
            source = archive.extractfile(member)
            outputs.add("/".join(parts), source, member.size)


def workspace_archive(workdir: Path, sdk_path: Path):
    """A tar of the working directory as /workspace and the SDK as /opt/studio-sdk (no links followed), spooled to
    disk past SPOOL_BYTES and rewound; the caller closes it."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    with tarfile.open(fileobj=spool, mode="w") as archive:
        _add_tree(archive, workdir, WORKSPACE.lstrip("/"))
        _add_tree(archive, sdk_path / "studio_sdk", f"{SDK_DIR.lstrip('/')}/studio_sdk")
    spool.seek(0)
    return spool


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


def engine_failure(target, error: EngineError) -> str:
    """A run's reason when its engine cannot be used: every member reads it, so it says what an owner may read
    (`EngineError.public`); the worker's log keeps the detail."""
    logger.warning("Docker engine of target %s (%s): %s", target.name, target.pk, error)
    if error.public == str(error):
        return str(error)
    return (f"{error.public.rstrip('.')} ({target.name}). An owner of the workspace can test its connection on the "
            "Compute page to see why.")


class DockerDriver:
    def __init__(self, target):
        self.target = target

    def prepare(self, run, stop_check) -> Placement:
        """The environment's image, built (or waited for) and present on the target's engine."""
        environment = run.environment
        if environment is None or environment.kind == EnvironmentKind.USER_MANAGED:
            image = (environment.base_image if environment else "") or settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE
            return Placement(python=(environment.interpreter_path if environment else "") or "python3", image=image)
        try:
            image = builds.build_or_wait(builds.ensure_image(environment, enqueue=False), stop_check=stop_check)
            with client_for(self.target, timeout=settings.STUDIO_BUILD_TIMEOUT_SECONDS) as client:
                builds.ensure_on_engine(image, client)
        except builds.BuildError as error:
            raise PlacementError(str(error)) from None
        except EngineError as error:
            raise PlacementError(engine_failure(self.target, error)) from None
        return Placement(python=f"{VENV}/bin/python", image=image.name)

    def base_environment(self, placement: Placement, workdir: Path) -> BaseEnvironment:
        variables = {"PATH": CONTAINER_PATH, "HOME": WORKSPACE, "TMPDIR": "/tmp"}
        return BaseEnvironment(variables, SDK_DIR, self.target.callback_url or settings.STUDIO_CONTAINER_API_URL)

    def launch(self, spec: LaunchSpec) -> DockerProcess:
        """Start the run's container (a stale one of the same run is removed first)."""
        try:
            client = client_for(self.target, timeout=CONTROL_TIMEOUT_SECONDS)
        except EngineError as error:
            raise LaunchError(engine_failure(self.target, error)) from None
        try:
            process = self._start(client, spec)
        except docker.errors.DockerException as error:
            client.close()
            raise LaunchError(f"Could not start the container: {error}") from None
        return process

    def _start(self, client, spec: LaunchSpec) -> DockerProcess:
        name = container_name(spec.run_id)
        remove_stale(client, name)
        container = client.containers.create(spec.placement.image, command=spec.argv, **self._create_options(spec, name))
        process = DockerProcess(client, container, client_for(self.target, timeout=STREAM_TIMEOUT_SECONDS),
                                spec.console)
        try:
            with workspace_archive(spec.workdir, settings.STUDIO_SDK_PATH) as archive:
                container.put_archive("/", archive)
            console = process.attach()
            container.start()
        except BaseException:
            process.remove()
            raise
        process.watch(console)
        return process

    def adopt(self, run_id: int, workdir: Path, console: Console) -> DockerProcess | None:
        """The run's container, running or ended, when it is still on the engine; its console resumes after what
        the run's log already holds."""
        try:
            client = client_for(self.target, timeout=CONTROL_TIMEOUT_SECONDS)
        except EngineError:
            return None
        try:
            container = client.containers.get(container_name(run_id))
            process = DockerProcess(client, container, client_for(self.target, timeout=STREAM_TIMEOUT_SECONDS),
                                    console)
        except (docker.errors.NotFound, EngineError):
            client.close()
            return None
        written = catch_up(console.stream_key, console.log, f"{console.stream_key}:published")
        process.watch(process.follow_logs(), skip_bytes=written)
        return process

    def _create_options(self, spec: LaunchSpec, name: str) -> dict:
        resources = spec.resources
        options = {
            "name": name,
            "labels": labels(spec.run_id),
            "environment": spec.env,
            "working_dir": WORKSPACE,
            "extra_hosts": {"host.docker.internal": "host-gateway"},
            "stdin_open": False,
            "tty": False,
            # An init process (the engine's tini) is PID 1, not the script: a PID 1 ignores signals it has no handler
            # for, so the SDK's SIGTERM handler could not end the script after flushing on cancel (it logged on until
            # SIGKILL, and those points were lost). It also reaps the script's orphans.
            "init": True,
        }
        if resources.get("memory_limit_mb"):
            options["mem_limit"] = f"{int(resources['memory_limit_mb'])}m"
            options["memswap_limit"] = options["mem_limit"]  # no swap beyond the limit: over it means killed
        if resources.get("cpu_limit"):
            options["nano_cpus"] = int(float(resources["cpu_limit"]) * 1e9)
        if resources.get("shm_size_mb"):
            options["shm_size"] = f"{int(resources['shm_size_mb'])}m"
        gpus = str(resources.get("gpus") or "")
        if gpus:
            count = -1 if gpus == "all" else int(gpus)
            options["device_requests"] = [docker.types.DeviceRequest(count=count, capabilities=[["gpu"]])]
        return options

    def sweep(self, finished) -> int:
        """Remove this installation's containers of runs that ended (a worker died before removing them).
        `finished(run_ids)` answers which of the given run ids have ended."""
        mine = {"label": ["studio.run", f"studio.instance={settings.STUDIO_INSTANCE_ID}"]}
        with client_for(self.target) as client:
            containers = {}
            for container in client.containers.list(all=True, filters=mine):
                run_id = container.labels.get("studio.run", "")
                if run_id.isdigit():
                    containers.setdefault(int(run_id), []).append(container)
            ended = finished(set(containers))
            for run_id in ended:
                for container in containers[run_id]:
                    with contextlib.suppress(docker.errors.NotFound):
                        container.remove(force=True)
            return sum(len(containers[run_id]) for run_id in ended)


def remove_stale(client, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)
