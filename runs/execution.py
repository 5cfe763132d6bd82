"""Running a run: thin Celery tasks hand off to `RunExecution`, which moves through named phases.

claim -> prepare -> launch -> watch -> finalize. Every status change is a conditional update (`Run.transition`), so a
duplicate delivery or a late message never starts a second process or rewrites a final state. What depends on the
kind of compute (a process, a container) is the compute driver's (`runs/compute/`); this module knows none of it.

The run's script is the durable thing; workers watch it and can be replaced. The worker watching a run owns it
(`Run.worker`) and proves it with a heartbeat (a thread of its own, from the claim to the end, so a long build or
install keeps it). A run whose heartbeat stops is taken over (`adopt`): by the same worker once it is back, or by
another on the run's queue, which finds the script through its driver and watches it to the end; a worker that
comes back from a pause to find its run taken over lets go without touching the script. A run is failed only when
its script is really gone, never because a heartbeat was late.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
import time

import redis
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from runs import live, queueing, snapshots, storage, sysmetrics, tokens
from runs.compute import Console, LaunchError, LaunchSpec, PlacementError, driver_for
from runs.models import ACTIVE_STATES, FINAL_STATES, Run, RunStatus, TrackedBy
from studio import live as studio_live
from studio.models import ComputeTarget

logger = logging.getLogger(__name__)
ADOPTION_NOTE_SECONDS = 30  # one adoption asked for per run at most this often


class OwnershipLost(Exception):
    """Another worker took the run over while this one was not heartbeating (paused, say): leave the script alone."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def late_before():
    """Heartbeats older than this are late: the watching worker is gone or stuck."""
    window = max(settings.STUDIO_RUN_LOST_AFTER_SECONDS, settings.STUDIO_RUN_HEARTBEAT_SECONDS * 2)
    return timezone.now() - timezone.timedelta(seconds=window)


class Heartbeat:
    """A thread that proves, every STUDIO_RUN_HEARTBEAT_SECONDS, that this worker still owns the run."""

    def __init__(self, run: Run, owner: str):
        self.run, self.owner = run, owner
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run.pk}", daemon=True)
        self._thread.start()

    def beat(self) -> bool:
        """True while the run is this worker's (a final run stays its to finish)."""
        updated = Run.objects.filter(pk=self.run.pk, worker=self.owner).update(heartbeat_at=timezone.now())
        if not updated:
            self.lost.set()
            return False
        self.run.transition(RunStatus.RUNNING, from_states=(RunStatus.NOT_RESPONDING,))
        return True

    def _loop(self) -> None:
        while not self._stop.wait(settings.STUDIO_RUN_HEARTBEAT_SECONDS):
            try:
                if not self.beat():
                    return
            except Exception:  # the database blinked: the next beat tries again; the reaper waits 4 beats
                logger.warning("Heartbeat of run %s not recorded", self.run.pk, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class RunExecution:
    def __init__(self, run: Run):
        self.run = run
        self.workdir = storage.work_dir(run.pk)
        self.rundir = storage.run_dir(run.pk)
        self.worker_name = worker_name()
        self.driver = driver_for(run.compute_target)
        self.console = Console(self.rundir / storage.CONSOLE_LOG, live.stream_key(run.pk), self.rundir / "keeper")
        self.heartbeat: Heartbeat | None = None

    # Phase 1: claim (or take over) ------------------------------------------------------------------------------------
    def claim(self) -> bool:
        return self.run.transition(
            RunStatus.PREPARING,
            from_states=(RunStatus.QUEUED,),
            worker=self.worker_name,
            heartbeat_at=timezone.now(),
        )

    def take_over(self) -> bool:
        """Become the run's owner when its owner stopped heartbeating (or is a dead process of this host)."""
        stale = Q(heartbeat_at__lt=late_before()) | Q(heartbeat_at__isnull=True) | Q(worker__in=dead_local_workers())
        taken = Run.objects.filter(stale, pk=self.run.pk, status__in=ACTIVE_STATES).update(
            worker=self.worker_name, heartbeat_at=timezone.now()
        )
        if taken:
            self.run.refresh_from_db()
        return bool(taken)

    def execute(self) -> None:
        """Run every phase after a successful claim; any studio error ends the run Failed with the reason."""
        self._guarded(self._execute)

    def resume(self) -> None:
        """Watch a run taken over from a worker that stopped: its script, found through the driver, to the end."""
        self._guarded(self._resume)

    def _guarded(self, phases) -> None:
        self.heartbeat = Heartbeat(self.run, self.worker_name)
        handed_over = False
        try:
            phases()
        except OwnershipLost:
            handed_over = True
            logger.warning("Run %s was taken over by %s; this worker lets go of it", self.run.pk, self._owner())
        except InterruptedError as stop:  # canceled while waiting for its environment
            self.run.end_with_descendants(RunStatus.CANCELED, str(stop))
        except PlacementError as error:  # the environment could not be made: the user's to fix
            self.run.end_with_descendants(RunStatus.FAILED, str(error))
        except Exception as exc:  # the run must end in a final state whatever went wrong here
            logger.exception("Run %s failed inside the studio", self.run.pk)
            self.run.end_with_descendants(RunStatus.FAILED, f"Studio error: {type(exc).__name__}: {exc}")
        except BaseException:  # the worker is shutting down: its script goes on in its folder and is adopted
            handed_over = True
            raise
        finally:
            self.heartbeat.stop()
            if not handed_over:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _owner(self) -> str:
        return Run.objects.filter(pk=self.run.pk).values_list("worker", flat=True).first() or "another worker"

    def _execute(self) -> None:
        self.prepare()
        if self._cancel_reason() is not None:
            self.run.transition(RunStatus.CANCELED, from_states=ACTIVE_STATES, reason=self._cancel_reason())
            return
        self.launch_and_watch()

    def _resume(self) -> None:
        handle = self.driver.adopt(self.run.pk, self.workdir, self.console)
        if handle is not None:
            logger.info("Run %s adopted by %s", self.run.pk, self.worker_name)
            self.run.transition(RunStatus.RUNNING, from_states=(RunStatus.NOT_RESPONDING, RunStatus.STARTING))
            self.watch_to_the_end(handle)
        elif self.run.status in (RunStatus.PREPARING, RunStatus.STARTING):
            # Its worker stopped before the script started: nothing of the user's code ran. It starts again.
            self.run.transition(RunStatus.QUEUED, from_states=(RunStatus.PREPARING, RunStatus.STARTING),
                                worker="", heartbeat_at=None)
            queueing.enqueue(self.run)
        else:
            self.run.end_with_descendants(
                RunStatus.FAILED,
                "The run's script is gone: its worker stopped, and the script ended without leaving how it ended "
                "(the machine restarted, or its container was removed).",
            )

    # Phase 2: prepare -------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """A fresh working directory holding the snapshot, and the placement (interpreter, image) made ready."""
        storage.make_work_dir(self.run.pk)
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
        spec = LaunchSpec(
            run_id=self.run.pk, placement=self.placement,
            argv=[self.placement.python, self.run.entry_script, *self.run.arguments],
            workdir=self.workdir, env=self.environment(), console=self.console, resources=self.resources(),
            grace_seconds=settings.STUDIO_CANCEL_GRACE_SECONDS,
        )
        try:
            handle = self.driver.launch(spec)
        except LaunchError as error:
            self.run.transition(RunStatus.FAILED, from_states=ACTIVE_STATES, reason=str(error))
            return
        self.run.transition(RunStatus.RUNNING, from_states=(RunStatus.STARTING,))
        self.watch_to_the_end(handle)

    def watch_to_the_end(self, handle) -> None:
        """Watch the script until it ends, keep its exit code at once, collect its outputs, finalize."""
        outputs = storage.OutputCollector(self.run.pk)
        with handle:
            try:
                stop_reason = self.watch(handle)
            except OwnershipLost:
                handle.release()
                raise
            exit_code = handle.wait()
            self.run.transition(RunStatus.FINALIZING, from_states=(RunStatus.RUNNING, RunStatus.NOT_RESPONDING),
                                exit_code=exit_code)
            handle.collect(outputs)
            outputs.commit()
            stderr_tail, console_note = handle.stderr_tail(), handle.console_note()
        sdk_note = storage.sdk_delivery_note(self.console.log, stderr_tail)
        self.finalize(exit_code, stop_reason, stderr_tail, [console_note, outputs.note(), sdk_note],
                      oom_killed=handle.oom_killed)

    def watch(self, handle) -> str | None:
        """Until the script ends, stop it on a cancel request or when the time limit is reached, and sample its
        system metrics. Returns why the studio stopped it, or None when it ended by itself."""
        limit = self.run.max_duration_seconds
        started = self.run.started_at or timezone.now()
        sample_every = settings.STUDIO_SYSTEM_METRICS_SECONDS
        handle.sample()  # primes CPU accounting
        next_sample = time.monotonic() + min(1.0, sample_every)
        while handle.poll() is None:
            if self.heartbeat.lost.is_set():
                raise OwnershipLost()
            reason = self._cancel_reason()
            if reason is None and limit is not None and (timezone.now() - started).total_seconds() >= limit:
                reason = f"Maximum duration of {limit} s reached: the run was stopped."
            if reason is not None:
                handle.terminate(settings.STUDIO_CANCEL_GRACE_SECONDS)
                return reason
            if time.monotonic() >= next_sample:
                try:
                    sysmetrics.record(self.run, handle.sample())
                except Exception:  # a missed sample must not end the run; say so in the worker log
                    logger.warning("System metrics of run %s not recorded", self.run.pk, exc_info=True)
                next_sample = time.monotonic() + sample_every
            time.sleep(0.1)
        return None

    def _cancel_reason(self) -> str | None:
        try:
            return live.cancel_reason(self.run.pk)
        except redis.RedisError:
            requested = Run.objects.filter(pk=self.run.pk, cancel_requested_at__isnull=False).exists()
            return "Canceled by user." if requested else None

    # Phase 5: finalize ------------------------------------------------------------------------------------------------
    def finalize(self, exit_code: int, stop_reason: str | None, stderr_tail: list[str], notes: list[str],
                 *, oom_killed: bool = False) -> None:
        reported_failure = Run.objects.filter(pk=self.run.pk).values_list("reported_failure", flat=True).first()
        if stop_reason is not None:
            status, reason = RunStatus.CANCELED, stop_reason
        elif exit_code == 0 and reported_failure:
            status, reason = RunStatus.FAILED, reported_failure
        elif exit_code == 0:
            status, reason = RunStatus.COMPLETED, ""
        else:
            status, reason = RunStatus.FAILED, failure_reason(exit_code, stderr_tail, oom_killed=oom_killed)
        reason = "\n".join(part for part in [reason, *notes] if part).strip()
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
    elif exit_code > 128 and exit_code - 128 in signal.Signals._value2member_map_:
        head = f"Killed by {signal.Signals(exit_code - 128).name} (exit code {exit_code})."
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


def adopt_run(run_id: int) -> str:
    """Take over a run whose worker stopped heartbeating, and watch it to the end."""
    run = Run.objects.select_related("experiment", "workspace", "compute_target", "snapshot", "environment").filter(
        pk=run_id
    ).first()
    if run is None or run.is_final or run.tracked_by:  # an external client's run has no script here
        return "nothing to adopt"
    execution = RunExecution(run)
    if not execution.take_over():
        return "still watched"
    execution.resume()
    return run.status


def dead_local_workers() -> list[str]:
    """`Run.worker` names of this host whose process is gone (a worker that was killed and restarted)."""
    host = socket.gethostname()
    names = Run.objects.filter(status__in=ACTIVE_STATES, worker__startswith=f"{host}:").values_list("worker", flat=True)
    dead = []
    for name in set(names):
        pid = name.rsplit(":", 1)[1]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            dead.append(name)
    return dead


def ask_adoption(run: Run) -> bool:
    """Queue `adopt_run` on the run's target queue, at most once per ADOPTION_NOTE_SECONDS."""
    try:
        if not studio_live.claim_note(f"studio:run:{run.pk}:adopting", ADOPTION_NOTE_SECONDS):
            return False
    except redis.RedisError:
        return False
    return queueing.request_adoption(run)


def adopt_orphans_of_this_host() -> int:
    """Runs whose worker on this host is gone (it was killed; this is the worker started after it): adopt them now,
    without waiting for the reaper."""
    runs = Run.objects.filter(status__in=ACTIVE_STATES, worker__in=dead_local_workers()).select_related("compute_target")
    return sum(ask_adoption(run) for run in runs)


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
    """Runs whose worker stopped heartbeating: shown NotResponding, and offered to a worker of their queue to adopt.
    Nothing here ends a run: only a worker that finds the script gone does. Runs an external client tracks (MLflow)
    have no worker and no heartbeat, and are left alone; so are child runs a parent's script made through the SDK
    (no worker or script of their own: they end with their parent, and its heartbeat stands for them)."""
    asked = 0
    late = Run.objects.filter(status__in=ACTIVE_STATES, tracked_by=TrackedBy.STUDIO).filter(
        Q(heartbeat_at__lt=late_before()) | Q(heartbeat_at__isnull=True) | Q(worker__in=dead_local_workers())
    ).exclude(parent__isnull=False, worker="").select_related("compute_target")
    for run in late:
        run.transition(RunStatus.NOT_RESPONDING, from_states=(RunStatus.RUNNING,))
        asked += ask_adoption(run)
    return asked


def requeue_stale_queued(older_than_seconds: float | None = None) -> int:
    """Queued runs whose message the broker lost (Redis restarted without it): queued again. A duplicate is harmless:
    the claim lets only one delivery start the run."""
    if older_than_seconds is None:
        older_than_seconds = settings.STUDIO_REQUEUE_AFTER_SECONDS
    cutoff = timezone.now() - timezone.timedelta(seconds=older_than_seconds)
    count = 0
    for run in Run.objects.filter(status=RunStatus.QUEUED, created_at__lt=cutoff).select_related("compute_target"):
        try:
            if studio_live.claim_note(f"studio:run:{run.pk}:requeued", older_than_seconds):
                count += queueing.enqueue(run)
        except redis.RedisError:
            return count
    return count
