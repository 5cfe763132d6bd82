"""Running a run: a thin Celery task hands off to `RunExecution`, which moves through named phases.

claim -> prepare -> launch -> watch -> finalize. Every status change is a conditional update (`Run.transition`), so a
duplicate delivery or a late message never starts a second process or rewrites a final state. What depends on the
kind of compute (a process, a container) is the compute driver's (`runs/compute/`); this module knows none of it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import time

import redis
from django.conf import settings
from django.utils import timezone

from runs import live, snapshots, storage, sysmetrics, tokens
from runs.compute import LaunchError, LaunchSpec, PlacementError, driver_for
from runs.models import ACTIVE_STATES, FINAL_STATES, Run, RunStatus
from studio.console import ConsoleSink
from studio.models import ComputeTarget

logger = logging.getLogger(__name__)


class RunExecution:
    def __init__(self, run: Run):
        self.run = run
        self.workdir = storage.work_dir(run.pk)
        self.rundir = storage.run_dir(run.pk)
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        self.driver = driver_for(run.compute_target)

    # Phase 1: claim ---------------------------------------------------------------------------------------------------
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
        except InterruptedError as stop:  # canceled while waiting for its environment
            self.run.end_with_descendants(RunStatus.CANCELED, str(stop))
        except PlacementError as error:  # the environment could not be made: the user's to fix
            self.run.end_with_descendants(RunStatus.FAILED, str(error))
        except Exception as exc:  # the run must end in a final state whatever went wrong here
            logger.exception("Run %s failed inside the studio", self.run.pk)
            self.run.end_with_descendants(RunStatus.FAILED, f"Studio error: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # Phase 2: prepare -------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """A fresh working directory holding the snapshot, and the placement (interpreter, image) made ready."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        (self.rundir / "logs").mkdir(parents=True, exist_ok=True)
        snapshots.materialize(self.run.snapshot, self.workdir)
        for name in ("outputs", "logs", ".tmp"):
            (self.workdir / name).mkdir(exist_ok=True)
        self.placement = self.driver.prepare(self.run, stop_check=self._cancel_reason)

    def environment(self) -> dict[str, str]:
        """A scrubbed environment: the kind's base, the environment's and the user's variables and the run context,
        nothing of the studio's own."""
        base = self.driver.base_environment(self.placement, self.workdir)
        env = dict(base.variables)
        env.update({"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        if self.run.environment is not None:
            env.update(self.run.environment.env_vars)
        env.update(self.run.env_vars)
        env["PYTHONPATH"] = f"{base.sdk_path}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else base.sdk_path
        env.update(
            {
                "STUDIO_RUN_ID": str(self.run.pk),
                "STUDIO_RUN_TOKEN": tokens.issue(self.run),
                "STUDIO_EXPERIMENT": self.run.experiment.name,
                "STUDIO_WORKSPACE": self.run.workspace.name,
                "STUDIO_API_URL": base.api_url,
            }
        )
        return env

    def resources(self) -> dict:
        """The target's limits, overridden by the run's own."""
        target = self.run.compute_target
        limits = {"cpu_limit": target.cpu_limit, "memory_limit_mb": target.memory_limit_mb, "gpus": target.gpus,
                  "shm_size_mb": target.shm_size_mb}
        limits.update({k: v for k, v in (self.run.resources or {}).items() if v not in (None, "")})
        return limits

    # Phases 3 and 4: launch and watch ---------------------------------------------------------------------------------
    def launch_and_watch(self) -> None:
        if not self.run.transition(RunStatus.STARTING, from_states=(RunStatus.PREPARING,)):
            return
        sink = ConsoleSink(live.stream_key(self.run.pk), self.rundir / storage.CONSOLE_LOG)
        spec = LaunchSpec(
            run_id=self.run.pk, placement=self.placement,
            argv=[self.placement.python, self.run.entry_script, *self.run.arguments],
            workdir=self.workdir, env=self.environment(), resources=self.resources(),
        )
        outputs = storage.OutputCollector(self.run.pk)
        try:
            try:
                handle = self.driver.launch(spec, sink)
            except LaunchError as error:
                self.run.transition(RunStatus.FAILED, from_states=ACTIVE_STATES, reason=str(error))
                return
            with handle:
                self.run.transition(RunStatus.RUNNING, from_states=(RunStatus.STARTING,))
                stop_reason = self.watch(handle)
                exit_code = handle.wait()
                handle.collect(outputs)
        finally:
            sink.close()
        self.finalize(exit_code, stop_reason, sink, outputs, oom_killed=handle.oom_killed)

    def watch(self, handle) -> str | None:
        """Heartbeat until the script ends; stop it on a cancel request or when the time limit is reached.

        Returns why the studio stopped it, or None when it ended by itself.
        """
        started = time.monotonic()
        limit = self.run.max_duration_seconds
        heartbeat_every = settings.STUDIO_RUN_HEARTBEAT_SECONDS
        sample_every = settings.STUDIO_SYSTEM_METRICS_SECONDS
        handle.sample()  # primes CPU accounting
        next_heartbeat, next_sample = 0.0, started + min(1.0, sample_every)
        while handle.poll() is None:
            now = time.monotonic()
            reason = self._cancel_reason()
            if reason is None and limit is not None and now - started >= limit:
                reason = f"Maximum duration of {limit} s reached: the run was stopped."
            if reason is not None:
                handle.terminate(settings.STUDIO_CANCEL_GRACE_SECONDS)
                return reason
            if now >= next_heartbeat:
                self.heartbeat()
                next_heartbeat = now + heartbeat_every
            if now >= next_sample:
                try:
                    sysmetrics.record(self.run, handle.sample())
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

    # Phase 5: finalize ------------------------------------------------------------------------------------------------
    def finalize(self, exit_code: int, stop_reason: str | None, sink: ConsoleSink, outputs: storage.OutputCollector,
                 *, oom_killed: bool = False) -> None:
        self.run.transition(RunStatus.FINALIZING, from_states=(RunStatus.RUNNING, RunStatus.NOT_RESPONDING))
        reported_failure = Run.objects.filter(pk=self.run.pk).values_list("reported_failure", flat=True).first()
        if stop_reason is not None:
            status, reason = RunStatus.CANCELED, stop_reason
        elif exit_code == 0 and reported_failure:
            status, reason = RunStatus.FAILED, reported_failure
        elif exit_code == 0:
            status, reason = RunStatus.COMPLETED, ""
        else:
            status, reason = RunStatus.FAILED, failure_reason(exit_code, list(sink.stderr_tail), oom_killed=oom_killed)
        note = outputs.note()
        if note:
            reason = f"{reason}\n{note}".strip()
        self.run.end_with_descendants(status, reason, exit_code=exit_code)


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


def sweep_targets() -> int:
    """What ended runs left on their targets (a worker died before removing its container), on every target."""

    def finished(run_ids: set[int]) -> set[int]:
        return set(Run.objects.filter(pk__in=run_ids, status__in=FINAL_STATES).values_list("pk", flat=True))

    removed = 0
    for target in ComputeTarget.objects.all():
        try:
            removed += driver_for(target).sweep(finished)
        except Exception:  # one unreachable engine must not stop the clean-up of the others
            logger.warning("Could not clean up after ended runs on target %s", target.pk, exc_info=True)
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
