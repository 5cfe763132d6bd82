"""The endpoints' controller: one process (`manage.py serve_endpoints`, supervised with the rest of the studio) that
makes each deployment's instances what the database says, every second and at once when told.

For each deployment: its environment is made ready (the image built and on the target's engine, or the virtualenv
for local instances), then its current revision's instances are started; each becomes Ready when its server says
`init()` returned. When all of them are Ready the revision goes live (the gateway sends traffic to it) and the
previous revision's instances drain for the request timeout, then go: an update never drops a request. A dead
instance starts again after a growing pause; one that never got ready three times over (its `init()` keeps failing)
fails the deployment with what the instance printed. Each instance's console is followed into a log file and a live
stream (the console sink runs and builds use).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import redis
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from endpoints import routing
from endpoints.instances import DockerInstances, InstanceError, LocalInstances, driver_for, ready
from endpoints.models import Deployment, DeploymentEvent, DeploymentState, Endpoint, Instance
from environments import builds
from environments.models import BuildStatus
from studio.console import ConsoleSink, LineSplitter, LogFollower
from studio.models import ComputeTarget
from studio.redis_client import get_redis

logger = logging.getLogger(__name__)
WAKE_CHANNEL = "studio:endpoints:reconcile"
TICK_SECONDS = 1.0
START_FAILURES = 3  # an instance that never got ready this many times fails its deployment
BACKOFF_SECONDS = (1, 2, 4, 8, 16, 30)
LOG_TAIL = 60
# A replaced instance serves its last requests for the request timeout and this long: more than the gateway's periodic
# reload (3 s), so a gateway that missed the change notice still never routes to a removed instance.
DRAIN_MARGIN_SECONDS = 4
FILE_TIME_MARGIN = 0.02  # seconds: see _follow
SWEEP_SECONDS = 30  # how often containers of deployments the database no longer has are looked for


def wake() -> None:
    """Ask the controller to act now (a deployment was created, changed or deleted)."""
    try:
        get_redis().publish(WAKE_CHANNEL, "wake")
    except redis.RedisError:
        logger.warning("Could not wake the endpoints controller; it looks again within a second", exc_info=True)


def _drain_time(deployment: Deployment) -> timedelta:
    return timedelta(seconds=deployment.request_timeout_ms / 1000 + DRAIN_MARGIN_SECONDS)


def console_path(instance: Instance) -> Path:
    return Path(settings.DATA_DIR) / "endpoints" / "consoles" / f"{instance.handle.replace(':', '-')}.log"


class Reconciler:
    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="prepare")
        self.preparing: dict[tuple[int, int], Future] = {}
        self.followers: dict[int, threading.Thread] = {}
        self.swept_at = float("-inf")

    # The loop ----------------------------------------------------------------------------------------------------
    def run_forever(self) -> None:
        pubsub = None
        while True:
            close_old_connections()
            try:
                self.tick()
            except Exception:
                logger.exception("Endpoints not reconciled this time")
            try:
                if pubsub is None:
                    pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(WAKE_CHANNEL)
                pubsub.get_message(timeout=TICK_SECONDS)
            except redis.RedisError:
                pubsub = None
                time.sleep(TICK_SECONDS)

    def tick(self) -> None:
        changed = False
        for endpoint in Endpoint.objects.filter(deleting=True):
            changed |= self.delete_endpoint(endpoint)
        deployments = Deployment.objects.select_related(
            "endpoint", "environment", "compute_target", "model_version__model").filter(endpoint__deleting=False)
        for deployment in deployments:
            try:
                if deployment.state == DeploymentState.DELETING:
                    changed |= self.delete_deployment(deployment)
                else:
                    changed |= self.reconcile(deployment)
            except Exception as error:
                logger.exception("Deployment %s not reconciled", deployment.pk)
                self._say(deployment, DeploymentState.UNHEALTHY, f"The controller hit an error: {error}")
        if changed:
            routing.notify()
        self.followers = {pk: thread for pk, thread in self.followers.items() if thread.is_alive()}
        if time.monotonic() - self.swept_at >= SWEEP_SECONDS:
            self.swept_at = time.monotonic()
            self.sweep()

    def sweep(self) -> None:
        """Remove the containers of deployments that no longer exist, on every Docker target."""
        def existing(ids):
            return Deployment.objects.filter(pk__in=ids).values_list("pk", flat=True)

        for target in ComputeTarget.objects.filter(kind="docker"):
            try:
                removed = DockerInstances(target).sweep(existing)
            except Exception:  # the engine is away: next time
                logger.info("Serving containers on %s not swept", target, exc_info=True)
                continue
            if removed:
                logger.warning("Removed %s container(s) of deleted deployments on %s", removed, target)

    # One deployment ----------------------------------------------------------------------------------------------
    def reconcile(self, deployment: Deployment) -> bool:
        driver = driver_for(deployment.compute_target)
        instances = list(deployment.instances.all())
        changed = self.watch_previous(deployment, driver, instances)
        if deployment.state == DeploymentState.FAILED and deployment.failed_revision == deployment.revision:
            return self._drain(deployment) or changed
        prepared = self.prepare(deployment)
        if prepared is None:
            return changed
        failure, image = prepared
        if failure:
            self._fail(deployment, failure)
            return self._drain(deployment) or changed
        current = {i.index: i for i in instances if i.revision == deployment.revision}
        for index in range(deployment.instance_count):
            if index not in current:
                current[index] = self.start(deployment, driver, index, image)
        for instance in current.values():
            changed |= self.check(deployment, driver, instance, image)
            self.keep_following(instance, driver)
            if deployment.state == DeploymentState.FAILED:
                return True
        for index, instance in list(current.items()):
            if index >= deployment.instance_count:  # scaled down
                driver.remove(instance)
                instance.delete()
                changed = True
        ready_count = sum(1 for i in current.values() if i.state == Instance.State.READY)
        if ready_count >= deployment.instance_count and deployment.live_revision != deployment.revision:
            previous = deployment.live_revision
            Deployment.objects.filter(pk=deployment.pk).update(live_revision=deployment.revision)
            deployment.live_revision = deployment.revision
            drain_until = timezone.now() + _drain_time(deployment)
            Instance.objects.filter(deployment=deployment).exclude(revision=deployment.revision).update(
                state=Instance.State.DRAINING, drain_until=drain_until)
            DeploymentEvent.objects.create(endpoint=deployment.endpoint, deployment=deployment.name,
                                           text=f"Revision {deployment.revision} is live"
                                                + (f" (replacing revision {previous})" if previous else "") + ".")
            routing.notify()  # at once, not after the other deployments: it is Healthy in a moment
            changed = True
        live_ready = ready_count if deployment.live_revision == deployment.revision else 0
        if live_ready >= deployment.instance_count:
            self._say(deployment, DeploymentState.HEALTHY, "")
        elif deployment.live_revision and deployment.live_revision != deployment.revision:
            self._say(deployment, DeploymentState.UPDATING,
                      f"Starting revision {deployment.revision}: {ready_count} of {deployment.instance_count} ready.")
        elif deployment.live_revision:
            self._say(deployment, DeploymentState.UNHEALTHY,
                      f"{live_ready} of {deployment.instance_count} instances ready: the others are starting again.")
        else:
            self._say(deployment, DeploymentState.STARTING,
                      f"{ready_count} of {deployment.instance_count} instances ready (running init()).")
        return self._drain(deployment) or changed

    def watch_previous(self, deployment: Deployment, driver, instances: list[Instance]) -> bool:
        """The instances of earlier revisions still serving (the live one while a new revision starts or after it
        failed) are checked too: one that died is taken out of the traffic. It is not started again (its revision's
        script and models are no longer the deployment's); the new revision replaces it."""
        changed = False
        for instance in instances:
            if instance.revision == deployment.revision or instance.state != Instance.State.READY:
                continue
            status, code = driver.status(instance)
            if status == "running":
                self.keep_following(instance, driver)
                continue
            instance.state, instance.last_error = Instance.State.DEAD, driver.logs(instance, LOG_TAIL)[-20000:]
            instance.save(update_fields=["state", "last_error"])
            DeploymentEvent.objects.create(
                endpoint=deployment.endpoint, deployment=deployment.name,
                text=f"Instance {instance.index} of revision {instance.revision} stopped (exit code {code}); revision "
                     f"{deployment.revision} replaces it.")
            changed = True
        return changed

    def prepare(self, deployment: Deployment):
        """(failure or "", image) once the environment is ready, None while it is being made."""
        environment = deployment.environment
        key = (deployment.pk, deployment.revision)
        local = deployment.compute_target.kind != "docker"
        if environment is None or (not local and not environment.needs_image):
            return "", None
        if local:
            future = self.preparing.get(key)
            if future is None:
                self.preparing[key] = self.pool.submit(LocalInstances(deployment.compute_target).python, deployment)
                self._say(deployment, self._waiting(deployment), "Making the environment's virtualenv.")
                return None
            if not future.done():
                return None
            error = future.exception()
            return (f"The environment could not be made: {error}" if error else ""), None
        image = builds.ensure_image(environment, enqueue=False)
        image.refresh_from_db()
        if image.status == BuildStatus.SUCCEEDED:
            return "", image
        if image.status == BuildStatus.FAILED:
            detail = (image.error or "see its build log").strip()[:2000]
            return f"The environment's image failed to build: {detail}", None
        if key not in self.preparing or self.preparing[key].done():
            self.preparing[key] = self.pool.submit(_build, image.pk)
        self._say(deployment, self._waiting(deployment), f"Building the environment's image ({image.name}).")
        return None

    def start(self, deployment: Deployment, driver, index: int, image) -> Instance:
        try:
            instance = driver.start(deployment, deployment.revision, index, image)
        except InstanceError as error:
            instance = Instance(deployment=deployment, revision=deployment.revision, index=index,
                                handle=f"failed-{deployment.pk}-{deployment.revision}-{index}", port=None,
                                state=Instance.State.DEAD, last_error=str(error))
        else:
            instance.state = Instance.State.STARTING
        instance.started_at = timezone.now()
        instance.save()
        self.follow(instance, driver)
        return instance

    def check(self, deployment: Deployment, driver, instance: Instance, image) -> bool:
        """Move one instance on: Starting -> Ready, dead -> started again (after a pause) or the deployment fails."""
        now = timezone.now()
        status, code = driver.status(instance) if instance.state != Instance.State.DEAD or instance.port else (
            "missing", None)
        if status == "running":
            if instance.state == Instance.State.STARTING and ready(instance.host, instance.port):
                instance.state, instance.restarts = Instance.State.READY, 0
                instance.save(update_fields=["state", "restarts"])
                return True
            return False
        if instance.state != Instance.State.DEAD:  # it just died
            was_ready = instance.state == Instance.State.READY
            tail = driver.logs(instance, LOG_TAIL)
            instance.last_error = (tail or instance.last_error)[-20000:]
            instance.state = Instance.State.DEAD
            instance.restarts += 1
            pause = BACKOFF_SECONDS[min(instance.restarts - 1, len(BACKOFF_SECONDS) - 1)]
            instance.next_attempt_at = now + timedelta(seconds=pause)
            instance.save()
            DeploymentEvent.objects.create(
                endpoint=deployment.endpoint, deployment=deployment.name,
                text=f"Instance {instance.index} of revision {instance.revision} stopped (exit code {code}); "
                     f"starting it again in {pause} s.")
            if not was_ready and instance.restarts >= START_FAILURES:
                self._fail(deployment, f"Instance {instance.index} never became ready ({instance.restarts} tries; "
                                       f"exit code {code}). Its console:\n{instance.last_error}")
            return was_ready
        if instance.next_attempt_at and now < instance.next_attempt_at:
            return False
        try:  # start it again, as new: the files are copied in afresh
            driver.remove(instance)
            fresh = driver.start(deployment, instance.revision, instance.index, image)
        except InstanceError as error:
            instance.last_error = str(error)
            instance.restarts += 1
            instance.next_attempt_at = now + timedelta(
                seconds=BACKOFF_SECONDS[min(instance.restarts - 1, len(BACKOFF_SECONDS) - 1)])
            instance.save()
            if instance.restarts >= START_FAILURES:
                self._fail(deployment, f"Instance {instance.index} could not be started: {error}")
            return False
        instance.handle, instance.host, instance.port = fresh.handle, fresh.host, fresh.port
        instance.state, instance.started_at = Instance.State.STARTING, now
        instance.save()
        self.follow(instance, driver)
        return False

    def _drain(self, deployment: Deployment) -> bool:
        """Remove the instances of replaced revisions once their drain time is over."""
        changed = False
        driver = driver_for(deployment.compute_target)
        now = timezone.now()
        for instance in deployment.instances.exclude(revision=deployment.revision):
            if instance.revision == deployment.live_revision:
                continue  # still serving: the new revision is not live yet (or it failed)
            if instance.state != Instance.State.DRAINING:
                instance.state = Instance.State.DRAINING
                instance.drain_until = now + _drain_time(deployment)
                instance.save(update_fields=["state", "drain_until"])
                changed = True
            elif instance.drain_until is None or now >= instance.drain_until:
                driver.remove(instance)
                instance.delete()
                changed = True
        return changed

    def _fail(self, deployment: Deployment, reason: str) -> None:
        event = f"Revision {deployment.revision} failed: {reason.splitlines()[0]}"
        if deployment.live_revision and deployment.live_revision != deployment.revision:
            serving = f"revision {deployment.live_revision} still serves"
            reason, event = f"Revision {deployment.revision} failed ({serving}). {reason}", f"{event} ({serving})"
        with transaction.atomic():
            Deployment.objects.filter(pk=deployment.pk).update(
                state=DeploymentState.FAILED, reason=reason[-20000:], failed_revision=deployment.revision)
            DeploymentEvent.objects.create(endpoint=deployment.endpoint, deployment=deployment.name,
                                           text=event[:2000])
        deployment.state, deployment.reason, deployment.failed_revision = (
            DeploymentState.FAILED, reason, deployment.revision)
        driver = driver_for(deployment.compute_target)
        for instance in deployment.instances.filter(revision=deployment.revision):
            driver.remove(instance)
            instance.delete()

    @staticmethod
    def _waiting(deployment: Deployment) -> str:
        return DeploymentState.UPDATING if deployment.live_revision else DeploymentState.BUILDING

    @staticmethod
    def _say(deployment: Deployment, state: str, reason: str) -> None:
        if deployment.state != state or deployment.reason != reason:
            Deployment.objects.filter(pk=deployment.pk).exclude(state=DeploymentState.DELETING).update(
                state=state, reason=reason)
            deployment.state, deployment.reason = state, reason

    # Deleting ----------------------------------------------------------------------------------------------------
    def delete_deployment(self, deployment: Deployment) -> bool:
        driver = driver_for(deployment.compute_target)
        for instance in deployment.instances.all():
            driver.remove(instance)
        endpoint = deployment.endpoint
        with transaction.atomic():
            traffic = {k: v for k, v in endpoint.traffic.items() if k != deployment.name}
            mirror = {k: v for k, v in endpoint.mirror.items() if k != deployment.name}
            Endpoint.objects.filter(pk=endpoint.pk).update(traffic=traffic, mirror=mirror)
            DeploymentEvent.objects.create(endpoint=endpoint, deployment=deployment.name, text="Deleted.")
            deployment.delete()
        return True

    def delete_endpoint(self, endpoint: Endpoint) -> bool:
        for deployment in endpoint.deployments.select_related("compute_target"):
            driver = driver_for(deployment.compute_target)
            for instance in deployment.instances.all():
                driver.remove(instance)
        endpoint.delete()
        return True

    # Consoles ----------------------------------------------------------------------------------------------------
    def follow(self, instance: Instance, driver, *, resume: bool = False) -> None:
        """Follow the console of an instance just started (from its first byte), or with `resume` of one started
        before this controller was (from where its console file ends)."""
        if instance.state == Instance.State.DEAD and not instance.port:
            return
        thread = threading.Thread(target=self._follow, args=(instance.pk, instance.handle, instance.stream_key,
                                                              driver, resume), name=f"console-{instance.pk}",
                                  daemon=True)
        self.followers[instance.pk] = thread
        thread.start()

    def keep_following(self, instance: Instance, driver) -> None:
        """A serving instance whose console nobody follows (this controller was restarted, or the engine dropped
        the stream) is followed again."""
        if instance.state not in (Instance.State.STARTING, Instance.State.READY) or not instance.port:
            return
        thread = self.followers.get(instance.pk)
        if thread is None or not thread.is_alive():
            self.follow(instance, driver, resume=True)

    @staticmethod
    def _follow(instance_pk: int, handle: str, stream_key: str, driver, resume: bool = False) -> None:
        instance = Instance(pk=instance_pk, handle=handle)
        path = console_path(instance)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if isinstance(driver, LocalInstances):
                source = Instance.objects.filter(pk=instance_pk).first()
                if source is None:
                    return
                log = driver.log_path(source)
                offset = log.stat().st_size if resume and log.exists() else 0
                follower = LogFollower(stream_key, log, None, offset, None)
                while Instance.objects.filter(pk=instance_pk, handle=handle).exists():
                    time.sleep(1)
                follower.stop()
                return
            # File times come from the kernel's coarse clock (a few ms behind): without the margin, the last line
            # written (stamped by the engine just before) would come again.
            since = path.stat().st_mtime + FILE_TIME_MARGIN if resume and path.exists() else None
            client, frames = driver.follow(instance, since=since)
            sink = ConsoleSink(stream_key, path)
            splitters = {"out": LineSplitter("out", sink), "err": LineSplitter("err", sink)}
            try:
                for frame in frames:
                    for source, data in zip(("out", "err"), frame, strict=True):
                        if data:
                            splitters[source].feed(data)
            finally:
                for splitter in splitters.values():
                    splitter.close()
                sink.close()
                client.close()
        except Exception:  # the container went away: its console ends here
            logger.debug("Console of instance %s ended", instance_pk, exc_info=True)
        finally:
            close_old_connections()


def _build(image_pk: int) -> None:
    from environments.models import EnvironmentImage

    close_old_connections()
    try:
        builds.build_or_wait(EnvironmentImage.objects.get(pk=image_pk), stop_check=lambda: None)
    except builds.BuildError:
        pass  # the image says it failed; the deployment reads that
    finally:
        close_old_connections()
