"""Running a run: a thin Celery task hands off to `RunExecution`, which moves through named phases.

claim -> prepare -> launch -> watch -> finalize. Every status change is a conditional update
(`Run.transition`), so a duplicate delivery or a late message never starts a second process or
rewrites a final state.
"""

from __future__ import annotations

import collections
import logging
import os
import pwd
import queue
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import docker
import redis
from django.conf import settings
from django.utils import timezone

from environments import builds, venvs
from environments.definition import VENV
from environments.models import EnvironmentKind
from runs import live, snapshots, storage, sysmetrics, tokens
from runs.compute import LaunchSpec, Placement, driver_for
from runs.compute import docker as docker_compute
from runs.models import ACTIVE_STATES, FINAL_STATES, Run, RunStatus
from studio.docker_engine import client_for
from studio.models import ComputeTarget

logger = logging.getLogger(__name__)

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
STDERR_TAIL_LINES = 15
TRUNCATED_NOTE = " … [line truncated in the live view; the full line is in the log file]"


class ConsoleSink:
    """Receives console output from the driver: appends it to the run's log file and its live stream.

    Reader threads call `feed`; one writer thread writes the file and publishes to Redis in batches,
    so a script printing fast costs one Redis round trip per batch, not per line.
    """

    def __init__(self, run_id: int, log_path: Path):
        self.run_id = run_id
        self.log_path = log_path
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.line_count = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._continuing = {"out": False, "err": False}
        self._redis_ok = True
        self._writer = threading.Thread(target=self._write_loop, name=f"run-{run_id}-console", daemon=True)
        self._writer.start()

    def feed(self, source: str, chunk: bytes) -> None:
        self._queue.put((source, chunk))

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=60)

    def _write_loop(self) -> None:
        limit = settings.STUDIO_LOG_LIVE_LINE_BYTES
        with open(self.log_path, "ab", buffering=0) as log_file:
            while True:
                item = self._queue.get()
                batch_raw, batch_live, done = [], [], item is None
                while item is not None:
                    source, chunk = item
                    batch_raw.append(chunk)
                    live_text = self._live_text(source, chunk, limit)
                    if live_text is not None:
                        batch_live.append((source, live_text))
                    if len(batch_raw) >= 2000:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        done = True
                log_file.write(b"".join(batch_raw))
                self._publish(batch_live)
                if done:
                    return

    def _live_text(self, source: str, chunk: bytes, limit: int) -> str | None:
        """One display line per console line; pieces of an over-long line after the first are dropped."""
        ends_line = chunk.endswith(b"\n")
        continuing = self._continuing[source]
        self._continuing[source] = not ends_line
        if continuing:
            return None
        self.line_count += 1
        text = live.clean_line(chunk[:limit].rstrip(b"\r\n"))
        if len(chunk) > limit or not ends_line and len(chunk) >= limit:
            text += TRUNCATED_NOTE
        if source == "err":
            self.stderr_tail.append(text)
        return text

    def _publish(self, batch: list[tuple[str, str]]) -> None:
        if not batch:
            return
        try:
            live.publish_lines(self.run_id, batch)
            self._redis_ok = True
        except redis.RedisError:
            if self._redis_ok:  # say it once per outage; the log file still has every line
                logger.warning("Live log of run %s not published to Redis", self.run_id, exc_info=True)
            self._redis_ok = False


class RunExecution:
    def __init__(self, run: Run):
        self.run = run
        self.workdir = storage.work_dir(run.pk)
        self.rundir = storage.run_dir(run.pk)
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"

    # Phase 1 -----------------------------------------------------------------------------
    def claim(self) -> bool:
        return self.run.transition(
            RunStatus.PREPARING,
            from_states=(RunStatus.QUEUED,),
            worker=self.worker_name,
            heartbeat_at=timezone.now(),
        )

    def execute(self) -> None:
        """Run every phase after a successful claim; any studio error ends the run Failed with the reason."""
        try:
            self.prepare()
            if self._cancel_reason() is not None:
                self.run.transition(RunStatus.CANCELED, from_states=ACTIVE_STATES, reason=self._cancel_reason())
                return
            self.launch_and_watch()
        except InterruptedError as stop:  # canceled while waiting for its image
            self.run.end_with_descendants(RunStatus.CANCELED, str(stop))
        except (venvs.VenvError, builds.BuildError) as error:  # the environment could not be made: the user's to fix
            self.run.end_with_descendants(RunStatus.FAILED, str(error))
        except Exception as exc:  # the run must end in a final state whatever went wrong here
            logger.exception("Run %s failed inside the studio", self.run.pk)
            self.run.end_with_descendants(RunStatus.FAILED, f"Studio error: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # Phase 2 -----------------------------------------------------------------------------
    def prepare(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        (self.rundir / "logs").mkdir(parents=True, exist_ok=True)
        snapshots.materialize(self.run.snapshot, self.workdir)
        for name in ("outputs", "logs", ".tmp"):
            (self.workdir / name).mkdir(exist_ok=True)
        if settings.STUDIO_LOCAL_RUN_USER and not self.in_container:
            give_to_user(self.workdir, settings.STUDIO_LOCAL_RUN_USER)
        self.placement = self.place()

    @property
    def in_container(self) -> bool:
        return self.run.compute_target.kind == ComputeTarget.Kind.DOCKER

    def place(self) -> Placement:
        """Which interpreter (and, on Docker, which image) runs the script; builds or makes what is missing."""
        target, environment = self.run.compute_target, self.run.environment
        if not self.in_container:
            if environment is None or environment.kind == EnvironmentKind.USER_MANAGED:
                interpreter = (environment.interpreter_path if environment else "") or target.python_path
                return Placement(python=interpreter or settings.STUDIO_LOCAL_PYTHON)
            return Placement(python=venvs.ensure_venv(environment))
        if environment is None or environment.kind == EnvironmentKind.USER_MANAGED:
            image = (environment.base_image if environment else "") or settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE
            return Placement(python=(environment.interpreter_path if environment else "") or "python3", image=image)
        image = builds.build_or_wait(builds.ensure_image(environment, enqueue=False), stop_check=self._cancel_reason)
        with client_for(target, timeout=settings.STUDIO_BUILD_TIMEOUT_SECONDS) as client:
            builds.ensure_on_engine(image, client)
        return Placement(python=f"{VENV}/bin/python", image=image.name)

    def environment(self) -> dict[str, str]:
        """A scrubbed environment: the environment's and the user's variables and the run context, nothing of the
        studio's own."""
        if self.in_container:
            env = {"PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "HOME": docker_compute.WORKSPACE, "TMPDIR": "/tmp"}
            sdk_path = docker_compute.SDK_DIR
            api_url = self.run.compute_target.callback_url or settings.STUDIO_CONTAINER_API_URL
        else:
            env = {"PATH": f"{Path(self.placement.python).parent}:{SAFE_PATH}", "HOME": str(self.workdir),
                   "TMPDIR": str(self.workdir / ".tmp")}
            sdk_path = str(settings.STUDIO_SDK_PATH)
            api_url = settings.STUDIO_PUBLIC_URL
        env.update({"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        if self.run.environment is not None:
            env.update(self.run.environment.env_vars)
        env.update(self.run.env_vars)
        env["PYTHONPATH"] = f"{sdk_path}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else sdk_path
        env.update(
            {
                "STUDIO_RUN_ID": str(self.run.pk),
                "STUDIO_RUN_TOKEN": tokens.issue(self.run),
                "STUDIO_EXPERIMENT": self.run.experiment.name,
                "STUDIO_WORKSPACE": self.run.workspace.name,
                "STUDIO_API_URL": api_url,
            }
        )
        return env

    def resources(self) -> dict:
        target = self.run.compute_target
        limits = {"cpu_limit": target.cpu_limit, "memory_limit_mb": target.memory_limit_mb, "gpus": target.gpus,
                  "shm_size_mb": target.shm_size_mb}
        limits.update({k: v for k, v in (self.run.resources or {}).items() if v not in (None, "")})
        return limits

    # Phase 3 and 4 -----------------------------------------------------------------------
    def launch_and_watch(self) -> None:
        if not self.run.transition(RunStatus.STARTING, from_states=(RunStatus.PREPARING,)):
            return
        sink = ConsoleSink(self.run.pk, self.rundir / storage.CONSOLE_LOG)
        argv = [self.placement.python, self.run.entry_script, *self.run.arguments]
        spec = LaunchSpec(run_id=self.run.pk, image=self.placement.image, sdk_path=settings.STUDIO_SDK_PATH,
                          resources=self.resources())
        process = None
        try:
            try:
                process = driver_for(self.run.compute_target).launch(
                    argv=argv, workdir=self.workdir, env=self.environment(), sink=sink,
                    user="" if self.in_container else settings.STUDIO_LOCAL_RUN_USER, spec=spec,
                )
            except docker.errors.DockerException as exc:
                self.run.transition(RunStatus.FAILED, from_states=ACTIVE_STATES, reason=f"Could not start the container: {exc}")
                return
            except OSError as exc:
                self.run.transition(
                    RunStatus.FAILED, from_states=ACTIVE_STATES, reason=f"Could not start {argv[0]}: {exc.strerror}."
                )
                return
            self.run.transition(RunStatus.RUNNING, from_states=(RunStatus.STARTING,))
            stop_reason = self.watch(process)
            exit_code = process.wait()
            if hasattr(process, "copy_out"):
                process.copy_out(self.workdir)
        finally:
            sink.close()
            if process is not None and hasattr(process, "remove"):
                process.remove()
        oom = getattr(process, "oom_killed", False)
        self.finalize(exit_code, stop_reason, sink, oom_killed=oom)

    def watch(self, process) -> str | None:
        """Heartbeat until the process ends; stop it on a cancel request or when the time limit is reached.

        Returns why the studio stopped it, or None when it ended by itself.
        """
        started = time.monotonic()
        limit = self.run.max_duration_seconds
        heartbeat_every = settings.STUDIO_RUN_HEARTBEAT_SECONDS
        sample_every = settings.STUDIO_SYSTEM_METRICS_SECONDS
        sampler = process if hasattr(process, "sample") else sysmetrics.ProcessTreeSampler(process.pid)
        sampler.sample()  # primes CPU accounting
        next_heartbeat, next_sample = 0.0, started + min(1.0, sample_every)
        while process.poll() is None:
            now = time.monotonic()
            reason = self._cancel_reason()
            if reason is None and limit is not None and now - started >= limit:
                reason = f"Maximum duration of {limit} s reached: the run was stopped."
            if reason is not None:
                process.terminate(settings.STUDIO_CANCEL_GRACE_SECONDS)
                return reason
            if now >= next_heartbeat:
                self.heartbeat()
                next_heartbeat = now + heartbeat_every
            if now >= next_sample:
                try:
                    sysmetrics.record(self.run, sampler)
                except Exception:  # a missed sample must not end the run; say so in the worker log
                    logger.warning("System metrics of run %s not recorded", self.run.pk, exc_info=True)
                next_sample = now + sample_every
            time.sleep(0.1)
        return None

    def heartbeat(self) -> None:
        Run.objects.filter(pk=self.run.pk, status__in=ACTIVE_STATES).update(heartbeat_at=timezone.now())
        self.run.transition(RunStatus.RUNNING, from_states=(RunStatus.NOT_RESPONDING,))

    def _cancel_reason(self) -> str | None:
        try:
            return live.cancel_reason(self.run.pk)
        except redis.RedisError:
            requested = Run.objects.filter(pk=self.run.pk, cancel_requested_at__isnull=False).exists()
            return "Canceled by user." if requested else None

    # Phase 5 -----------------------------------------------------------------------------
    def finalize(self, exit_code: int, stop_reason: str | None, sink: ConsoleSink, *, oom_killed: bool = False) -> None:
        self.run.transition(RunStatus.FINALIZING, from_states=(RunStatus.RUNNING, RunStatus.NOT_RESPONDING))
        collect_note = collect_outputs(self.workdir, self.rundir)
        reported_failure = Run.objects.filter(pk=self.run.pk).values_list("reported_failure", flat=True).first()
        if stop_reason is not None:
            status, reason = RunStatus.CANCELED, stop_reason
        elif exit_code == 0 and reported_failure:
            status, reason = RunStatus.FAILED, reported_failure
        elif exit_code == 0:
            status, reason = RunStatus.COMPLETED, ""
        else:
            status, reason = RunStatus.FAILED, failure_reason(exit_code, list(sink.stderr_tail), oom_killed=oom_killed)
        if collect_note:
            reason = f"{reason}\n{collect_note}".strip()
        self.run.end_with_descendants(status, reason, exit_code=exit_code)


def give_to_user(root: Path, user: str) -> None:
    """Hand the working directory to the OS user that runs the script."""
    record = pwd.getpwnam(user)
    os.chown(root, record.pw_uid, record.pw_gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), record.pw_uid, record.pw_gid, follow_symlinks=False)


def failure_reason(exit_code: int, stderr_tail: list[str], *, oom_killed: bool = False) -> str:
    if oom_killed:
        head = f"Killed: out of memory (exit code {exit_code}); raise the memory limit or use less."
    elif exit_code == 137:
        head = "Killed (exit code 137): out of memory or time."
    elif exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        head = f"Killed by {name}."
    else:
        head = f"Exit code {exit_code}."
    tail = "\n".join(stderr_tail).strip()
    return f"{head}\n{tail}" if tail else head


def collect_outputs(workdir: Path, rundir: Path) -> str:
    """Copy regular files under ./outputs and ./logs into the run's storage (links are never followed).

    Returns a note for the run's reason when something was left out, else "".
    """
    budget = settings.STUDIO_OUTPUTS_MAX_BYTES
    skipped = []
    for top in storage.COLLECTED_DIRS:
        source_root = workdir / top
        if not source_root.is_dir() or source_root.is_symlink():
            continue
        for dirpath, _dirnames, filenames in os.walk(source_root, followlinks=False):
            for filename in filenames:
                source = Path(dirpath) / filename
                relative = source.relative_to(workdir)
                if source.is_symlink() or not source.is_file():
                    skipped.append(f"{relative} (not a regular file)")
                    continue
                size = source.stat().st_size
                if size > budget:
                    skipped.append(f"{relative} (over STUDIO_OUTPUTS_MAX_BYTES)")
                    continue
                target = rundir / relative
                if target.exists():  # never overwrite what the studio captured (the console log)
                    target = target.with_name(f"{target.stem}.user{target.suffix}")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target, follow_symlinks=False)
                budget -= size
    if not skipped:
        return ""
    return "Not stored: " + ", ".join(skipped[:10]) + (" …" if len(skipped) > 10 else "")


def execute_run(run_id: int) -> str:
    run = (
        Run.objects.select_related("experiment", "workspace", "compute_target", "snapshot", "environment")
        .filter(pk=run_id)
        .first()
    )
    if run is None:
        return "no such run"
    execution = RunExecution(run)
    if not execution.claim():
        return f"not claimed: run is {run.status}"
    execution.execute()
    return run.status


def remove_finished_containers() -> int:
    """Containers of runs that ended (a worker died before removing them), on every Docker target."""
    removed = 0
    for target in ComputeTarget.objects.filter(kind=ComputeTarget.Kind.DOCKER):
        try:
            with client_for(target) as client:
                mine = {"label": ["studio.run", f"studio.instance={settings.STUDIO_INSTANCE_ID}"]}
                labelled = {
                    int(c.labels["studio.run"])
                    for c in client.containers.list(all=True, filters=mine)
                    if c.labels.get("studio.run", "").isdigit()
                }
                finished = set(Run.objects.filter(pk__in=labelled, status__in=FINAL_STATES).values_list("pk", flat=True))
                removed += docker_compute.remove_finished_containers(client, finished)
        except Exception:  # one unreachable engine must not stop the clean-up of the others
            logger.warning("Could not clean up containers on target %s", target.pk, exc_info=True)
    return removed


def reap_lost_runs() -> int:
    """Runs whose worker stopped heartbeating: NotResponding when late, Failed when lost."""
    now = timezone.now()
    late = now - timezone.timedelta(seconds=settings.STUDIO_RUN_HEARTBEAT_SECONDS * 4)
    lost = now - timezone.timedelta(seconds=settings.STUDIO_RUN_LOST_AFTER_SECONDS)
    count = 0
    for run in Run.objects.filter(status__in=ACTIVE_STATES, heartbeat_at__lt=late):
        if run.heartbeat_at < lost:
            reason = f"The worker running this run stopped responding (last heartbeat {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)."
            count += run.transition(RunStatus.FAILED, from_states=ACTIVE_STATES, reason=reason)
        else:
            run.transition(RunStatus.NOT_RESPONDING, from_states=(RunStatus.RUNNING,))
    return count
