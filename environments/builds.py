"""Building environment images: a thin Celery task hands off to `ImageBuild`, which moves through named phases.

One `EnvironmentImage` per definition hash. `ensure_image` asks for it (queueing a build on the `builds` queue when it
is new); the claim `Queued -> Building` is a conditional update, so concurrent requests for one hash build once.
A run waiting for its image builds it itself when it can claim it, else waits: a worker pool full of waiting runs
never starves the build it waits for.
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import tarfile
import time
from pathlib import Path

import docker
from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from environments.models import BuildStatus, Environment, EnvironmentImage
from studio import live
from studio.console import ConsoleSink, clean_line
from studio.docker_engine import EngineError, build_client

logger = logging.getLogger(__name__)
STEP = re.compile(r"^Step \d+/\d+ : ")
CERTIFICATE_FAILURE = re.compile(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed", re.IGNORECASE)


class BuildError(Exception):
    pass


def stream_key(image_id: int) -> str:
    return f"studio:build:{image_id}:events"


def log_path(image: EnvironmentImage) -> Path:
    return Path(settings.DATA_DIR) / "builds" / str(image.pk) / "build.log"


def ensure_image(environment: Environment, *, enqueue: bool = True) -> EnvironmentImage | None:
    """The image of the environment's definition; a new one is queued for building. None for user-managed."""
    if not environment.needs_image:
        return None
    try:
        with transaction.atomic():
            image, created = EnvironmentImage.objects.get_or_create(definition_hash=environment.definition_hash)
    except IntegrityError:  # another request created it at the same moment
        image, created = EnvironmentImage.objects.get(definition_hash=environment.definition_hash), False
    if created:
        live.append_status(stream_key(image.pk), BuildStatus.QUEUED)
        if enqueue:
            transaction.on_commit(lambda: _enqueue(image.pk))
    return image


def rebuild(image: EnvironmentImage) -> bool:
    """Build again on purpose (e.g. to resolve unpinned packages anew)."""
    if not image.transition(BuildStatus.QUEUED, from_states=(BuildStatus.SUCCEEDED, BuildStatus.FAILED),
                            started_at=None, ended_at=None, failed_step="", error=""):
        return False
    live.append_status(stream_key(image.pk), BuildStatus.QUEUED)
    transaction.on_commit(lambda: _enqueue(image.pk))
    return True


def _enqueue(image_id: int) -> None:
    current_app.send_task("environments.tasks.build_image", args=[image_id], queue="builds")


class ImageBuild:
    """Phases: claim -> context -> build (log streamed live) -> inspect -> freeze."""

    def __init__(self, image: EnvironmentImage):
        self.image = image
        self.environment = image.environments().order_by("pk").first()
        self.key = stream_key(image.pk)
        self.log = log_path(image)

    def claim(self) -> bool:
        return self.image.transition(
            BuildStatus.BUILDING, from_states=(BuildStatus.QUEUED,), started_at=timezone.now(),
            worker=f"{socket.gethostname()}:{os.getpid()}", build_count=self.image.build_count + 1,
        )

    def run(self) -> None:
        live.append_status(self.key, BuildStatus.BUILDING)
        self.failed_step, self.lines = "", []
        try:
            with build_client(timeout=settings.STUDIO_BUILD_TIMEOUT_SECONDS) as client:
                built, frozen = self.build_with(client)
        except (BuildError, EngineError, docker.errors.DockerException, OSError) as error:
            self._fail(self.failed_step, self.lines, error)
            return
        self.image.transition(
            BuildStatus.SUCCEEDED, from_states=(BuildStatus.BUILDING,), ended_at=timezone.now(),
            image_id=built.id, size_bytes=built.attrs.get("Size") or 0, image_created=built.attrs.get("Created", ""),
            resolved_packages=frozen.decode("utf-8", "replace"),
        )
        live.append_status(self.key, BuildStatus.SUCCEEDED)

    def build_with(self, client):
        """Build on `client`'s engine with the log streamed live; the built image and its `pip freeze`."""
        self.failed_step, self.lines = "", []
        if self.environment is None:
            raise BuildError("No environment uses this definition any more.")
        definition = self.environment.definition()
        dockerfile = definition.dockerfile(ca_bundle=bool(settings.STUDIO_BUILD_CA_BUNDLE))
        EnvironmentImage.objects.filter(pk=self.image.pk).update(dockerfile=dockerfile)
        auth = self.environment.registry_auth()
        if auth:
            client.login(**auth)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_bytes(b"")  # a rebuild starts a fresh log
        sink = ConsoleSink(self.key, self.log)
        try:
            for source, line in self._build(client, dockerfile, definition.all_pip_packages):
                if STEP.match(line):
                    self.failed_step, self.lines = line, []
                self.lines.append(line)
                sink.feed(source, line.encode() + b"\n")
        finally:
            sink.close()
        built = client.images.get(self.image.name)
        frozen = client.containers.run(self.image.name, ["cat", "/opt/studio/venv/frozen.txt"], remove=True,
                                       network_disabled=True)
        return built, frozen

    def _build(self, client, dockerfile: str, packages: list[str]):
        """Yield the build's output as (source, line) as it comes; raise BuildError after the first error line."""
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as archive:
            _add(archive, "Dockerfile", dockerfile.encode())
            _add(archive, "requirements.txt", ("\n".join(packages) + "\n").encode())
            if settings.STUDIO_BUILD_CA_BUNDLE:
                _add(archive, "studio-ca-bundle.crt", Path(settings.STUDIO_BUILD_CA_BUNDLE).read_bytes())
        context.seek(0)
        buildargs = {k: v for k, v in {"PIP_INDEX_URL": settings.STUDIO_BUILD_PIP_INDEX_URL,
                                       "PIP_EXTRA_INDEX_URL": settings.STUDIO_BUILD_PIP_EXTRA_INDEX_URL}.items() if v}
        stream = client.api.build(
            fileobj=context, custom_context=True, tag=self.image.name, decode=True, rm=True, forcerm=True,
            pull=False, buildargs=buildargs, network_mode=settings.STUDIO_BUILD_NETWORK or None,
            nocache=self.image.build_count > 1,  # a rebuild resolves unpinned packages anew
            labels={"studio.definition_hash": self.image.definition_hash},
        )
        for chunk in stream:
            if "error" in chunk:
                message = clean_line(chunk.get("error", "").strip().encode())
                yield "err", message
                raise BuildError(message)
            text = chunk.get("stream") or chunk.get("status") or ""
            for line in text.splitlines():
                clean = clean_line(line.encode())
                if clean.strip():
                    yield "out", clean

    def _fail(self, step: str, lines: list[str], error: Exception) -> None:
        self.image.transition(
            BuildStatus.FAILED, from_states=(BuildStatus.BUILDING,), ended_at=timezone.now(),
            failed_step=step, error=failure_text(error, lines),
        )
        live.append_status(self.key, BuildStatus.FAILED)


def certificate_hint(text: str) -> str:
    """What to set when the build failed to verify a certificate (pip behind a TLS-inspecting proxy, say); else ""."""
    if not CERTIFICATE_FAILURE.search(text):
        return ""
    if settings.STUDIO_BUILD_CA_BUNDLE:
        return (f"A certificate could not be verified although STUDIO_BUILD_CA_BUNDLE is set "
                f"({settings.STUDIO_BUILD_CA_BUNDLE}): make sure that file holds the certificate of your proxy or "
                "package index (PEM), restart the studio, then rebuild.")
    return ("A certificate could not be verified (a TLS-inspecting proxy or a private package index?): set "
            "STUDIO_BUILD_CA_BUNDLE to a CA bundle file (PEM) that holds its certificate, restart the studio, "
            "then rebuild. The bundle is copied into the build and pip trusts it.")


def failure_text(error: Exception | str, lines: list[str]) -> str:
    """The stored error of a failed build: the error and the failed step's last lines, a certificate hint first."""
    text = f"{error}\n" + "\n".join(lines[-30:])
    hint = certificate_hint(f"{error}\n" + "\n".join(lines))
    return f"{hint}\n\n{text.strip()}".strip()[:20_000] if hint else text.strip()[:20_000]


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    archive.addfile(info, io.BytesIO(data))


def build(image_id: int) -> str:
    image = EnvironmentImage.objects.filter(pk=image_id).first()
    if image is None:
        return "no such image"
    job = ImageBuild(image)
    if not job.claim():
        return f"not claimed: {image.status}"
    job.run()
    return image.status


def image_present(image: EnvironmentImage, client) -> bool:
    try:
        client.images.get(image.name)
        return True
    except docker.errors.ImageNotFound:
        return False


def ensure_on_engine(image: EnvironmentImage, client) -> None:
    """A run's engine may not hold the image (pruned, or a remote target builds do not run on): build it there too,
    with the same definition (its layer cache makes that quick when it can)."""
    if image_present(image, client):
        return
    job = ImageBuild(image)
    try:
        job.build_with(client)
    except (BuildError, docker.errors.DockerException, OSError) as error:
        hint = certificate_hint(f"{error}\n" + "\n".join(job.lines))
        raise BuildError(f"The image {image.name} is not on this target's engine and building it there failed "
                         f"{('at ' + job.failed_step) if job.failed_step else ''}: {error}"
                         + (f" {hint}" if hint else "")) from None


def build_or_wait(image: EnvironmentImage, *, stop_check, poll_seconds: float = 0.5) -> EnvironmentImage:
    """Return the image once built (building it here when nobody else is); raise BuildError when it failed.

    `stop_check()` returns a reason to stop waiting (a cancel) or None.
    """
    while True:
        image.refresh_from_db()
        if image.status == BuildStatus.QUEUED:
            build(image.pk)
            continue
        if image.status == BuildStatus.SUCCEEDED:
            return image
        if image.status == BuildStatus.FAILED:
            step = f" at {image.failed_step}" if image.failed_step else ""
            hint = certificate_hint(image.error)
            raise BuildError(f"The environment's image failed to build{step}: see the build log."
                             + (f" {hint}" if hint else ""))
        reason = stop_check()
        if reason:
            raise InterruptedError(reason)
        time.sleep(poll_seconds)
