"""Instances of a deployment: the studio's scoring server (`endpoints/serving/studio_serving.py`) with the scoring
script and the model files, in a container on a Docker target or as a local process.

What an instance gets is laid out as Azure lays it out: the app root `/var/azureml-app` holds the scoring script
(`score.py`) and `azureml-models/<model>/<version>/<its files>`; AZUREML_MODEL_DIR is that version's folder for one
model, `azureml-models` for several. The files are copied in when the instance starts, from the blob store: no image
is built per model version (the image is the environment's, cached by its definition, as for runs).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
from django.conf import settings

from endpoints.models import Deployment, Instance
from environments import venvs
from environments.definition import VENV
from environments.models import EnvironmentKind
from models_registry.models import ModelVersion
from studio import blobs, sandbox
from studio.docker_engine import client_for

SERVING = Path(__file__).resolve().parent / "serving"
APP_ROOT = "/var/azureml-app"
SERVER_DIR = "/opt/studio-serving"
PORT = 5001
SPOOL = 16 * 1024 * 1024


class InstanceError(Exception):
    """An instance could not be started; the message says why."""


def model_versions(deployment: Deployment) -> list[ModelVersion]:
    extra = list(ModelVersion.objects.filter(extra_deployments__deployment=deployment).select_related("model"))
    return [deployment.model_version, *[v for v in extra if v.pk != deployment.model_version_id]]


def app_files(deployment: Deployment) -> list[tuple[str, Path | bytes]]:
    """(path under the app root, where its bytes are or the bytes themselves) of everything an instance needs."""
    files: list[tuple[str, Path | bytes]] = [
        ("score.py", deployment.scoring_source.encode() if deployment.scoring_sha256
         else SERVING / "studio_mlflow_score.py")]
    for version in model_versions(deployment):
        base = f"azureml-models/{version.model.name}/{version.version}"
        files += [(f"{base}/{item.path}", blobs.path(item.sha256)) for item in version.files.all()]
    return files


def instance_environment(deployment: Deployment, app_root: str) -> dict[str, str]:
    versions = model_versions(deployment)
    model_dir = (f"{app_root}/azureml-models/{versions[0].model.name}/{versions[0].version}" if len(versions) == 1
                 else f"{app_root}/azureml-models")
    return {
        "AML_APP_ROOT": app_root, "AZUREML_ENTRY_SCRIPT": "score.py", "AZUREML_MODEL_DIR": model_dir,
        "STUDIO_MAX_CONCURRENT": str(deployment.max_concurrent_requests + 2),  # the gateway enforces the limit;
        # the server's, a little higher, is a backstop that never answers 429 to a request the gateway let through
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1", "SERVICE_NAME": deployment.endpoint.name, "LANG": "C.UTF-8",
    }


def ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """The instance's server answers /ready (its init() returned)."""
    try:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request("GET", "/ready")
            return connection.getresponse().status == 200
        finally:
            connection.close()
    except (OSError, http.client.HTTPException):
        return False


# Docker ---------------------------------------------------------------------------------------------------------------


def container_name(deployment_id: int, revision: int, index: int) -> str:
    return f"studio-{settings.STUDIO_INSTANCE_ID}-dep-{deployment_id}-r{revision}-{index}"


@contextlib.contextmanager
def _archive(deployment: Deployment) -> Iterator:
    with tempfile.SpooledTemporaryFile(max_size=SPOOL) as spool:
        with tarfile.open(fileobj=spool, mode="w") as tar:
            for name, source in (("studio_serving.py", SERVING / "studio_serving.py"),):
                info = tar.gettarinfo(str(source), arcname=f"{SERVER_DIR.lstrip('/')}/{name}")
                info.uid = info.gid = 0
                info.mode = 0o644
                with open(source, "rb") as handle:
                    tar.addfile(info, handle)
            for relative, source in app_files(deployment):
                info = tarfile.TarInfo(f"{APP_ROOT.lstrip('/')}/{relative}")
                info.mode = 0o644
                if isinstance(source, bytes):
                    info.size = len(source)
                    tar.addfile(info, io.BytesIO(source))
                    continue
                info.size = source.stat().st_size
                with open(source, "rb") as handle:
                    tar.addfile(info, handle)
        spool.seek(0)
        yield spool


class DockerInstances:
    def __init__(self, target):
        self.target = target

    def _client(self, timeout: float = 300):
        return client_for(self.target, timeout=timeout)

    def placement(self, deployment: Deployment, image) -> tuple[str, str]:
        """(image name, python) of the deployment's environment on this target."""
        environment = deployment.environment
        if environment is None or environment.kind == EnvironmentKind.USER_MANAGED:
            image_name = (environment.base_image if environment else "") or settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE
            return image_name, (environment.interpreter_path if environment else "") or "python3"
        return image.name, f"{VENV}/bin/python"

    def start(self, deployment: Deployment, revision: int, index: int, image) -> Instance:
        from environments import builds

        image_name, python = self.placement(deployment, image)
        name = container_name(deployment.pk, revision, index)
        local = (self.target.docker_url or "").startswith("unix://")
        with self._client() as client:
            if image is not None:
                builds.ensure_on_engine(image, client)
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(name).remove(force=True)
            options = {
                "name": name, "command": [python, f"{SERVER_DIR}/studio_serving.py", "--port", str(PORT)],
                "environment": instance_environment(deployment, APP_ROOT), "working_dir": APP_ROOT,
                "labels": {"studio.deployment": str(deployment.pk), "studio.instance": settings.STUDIO_INSTANCE_ID,
                           "studio.revision": str(revision)},
                "ports": {f"{PORT}/tcp": ("127.0.0.1" if local else "0.0.0.0", None)}, "init": True,
                "detach": True, "stdin_open": False, "tty": False,
            }
            if deployment.memory_limit_mb:
                options["mem_limit"] = f"{deployment.memory_limit_mb}m"
                options["memswap_limit"] = options["mem_limit"]
            if deployment.cpu_limit:
                options["nano_cpus"] = int(deployment.cpu_limit * 1e9)
            try:
                container = client.containers.create(image_name, **options)
                with _archive(deployment) as archive:
                    container.put_archive("/", archive)
                container.start()
                container.reload()
            except (docker.errors.DockerException, OSError) as error:  # OSError: a model file could not be read
                with contextlib.suppress(docker.errors.DockerException):  # created, not started: not left behind
                    client.containers.get(name).remove(force=True)
                raise InstanceError(f"Could not start the container: {error}") from None
            binding = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{PORT}/tcp") or []
            port = int(binding[0]["HostPort"]) if binding else None
        host = "127.0.0.1" if local else (self.target.docker_url.split("://", 1)[1].split("@")[-1].split(":")[0])
        return Instance(deployment=deployment, revision=revision, index=index, handle=name, host=host, port=port)

    def status(self, instance: Instance) -> tuple[str, int | None]:
        """("running" | "exited" | "missing", exit code)."""
        try:
            with self._client(timeout=30) as client:
                container = client.containers.get(instance.handle)
                state = container.attrs.get("State", {})
        except docker.errors.NotFound:
            return "missing", None
        if state.get("Running") or state.get("Restarting"):
            return "running", None
        return "exited", state.get("ExitCode")

    def restart(self, instance: Instance) -> None:
        with self._client() as client:
            container = client.containers.get(instance.handle)
            container.restart(timeout=2)
            container.reload()
            binding = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{PORT}/tcp") or []
            instance.port = int(binding[0]["HostPort"]) if binding else instance.port

    def logs(self, instance: Instance, tail: int = 60) -> str:
        try:
            with self._client(timeout=30) as client:
                return client.containers.get(instance.handle).logs(tail=tail).decode("utf-8", "replace")
        except docker.errors.DockerException:
            return ""

    def remove(self, instance: Instance) -> None:
        with contextlib.suppress(docker.errors.NotFound), self._client(timeout=60) as client:
            client.containers.get(instance.handle).remove(force=True)

    def sweep(self, existing) -> int:
        """Remove this installation's serving containers whose deployment is gone (the database lost it, or it was
        deleted behind the controller's back); `existing(ids)` answers which of these deployment ids exist."""
        mine = {"label": ["studio.deployment", f"studio.instance={settings.STUDIO_INSTANCE_ID}"]}
        with self._client(timeout=60) as client:
            found: dict[int, list[str]] = {}
            for container in client.api.containers(all=True, filters=mine):
                value = (container.get("Labels") or {}).get("studio.deployment", "")
                if value.isdigit():
                    found.setdefault(int(value), []).append(container["Id"])
            gone = set(found) - set(existing(set(found)))
            for pk in gone:
                for container_id in found[pk]:
                    with contextlib.suppress(docker.errors.NotFound):
                        client.api.remove_container(container_id, force=True)
        return sum(len(found[pk]) for pk in gone)

    def follow(self, instance: Instance, since: float | None = None):
        """The container's console from its first byte (or what it printed after `since`, a UNIX time), following
        it: (stdout, stderr) pieces."""
        from runs.compute.docker import _log_frames

        client = self._client(timeout=30 * 24 * 3600)
        api = client.api
        params = {"stdout": 1, "stderr": 1, "follow": 1}
        if since is not None:
            params["since"] = f"{since:.9f}"
        response = api._get(api._url("/containers/{0}/logs", instance.handle), params=params, stream=True)
        api._raise_for_status(response)
        return client, _log_frames(response)


# Local processes -----------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


class LocalInstances:
    """The same server as a process on the studio's machine, in the environment's virtualenv and the local runs'
    sandbox (studio/sandbox.py), for machines without Docker."""

    def __init__(self, target):
        self.target = target

    @staticmethod
    def folder(deployment_id: int, revision: int, index: int) -> Path:
        return Path(settings.STUDIO_WORK_DIR) / f"endpoint-dep-{deployment_id}-r{revision}-{index}"

    def python(self, deployment: Deployment) -> str:
        environment = deployment.environment
        if environment is None:
            return self.target.python_path or sandbox.run_python()
        if environment.kind == EnvironmentKind.USER_MANAGED:
            return environment.interpreter_path or sandbox.run_python()
        return venvs.ensure_venv(environment, base_python=sandbox.run_python())

    def start(self, deployment: Deployment, revision: int, index: int, image) -> Instance:
        folder = self.folder(deployment.pk, revision, index)
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.parent.chmod(0o711)  # the instance's user reaches its own folder, and lists nothing
        folder.mkdir(mode=0o700)
        app = folder / "app"
        for relative, source in app_files(deployment):
            target = app / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes):
                target.write_bytes(source)
                continue
            try:
                os.link(source, target)  # blobs are read-only: sharing them costs nothing
            except OSError:
                shutil.copyfile(source, target)
        shutil.copyfile(SERVING / "studio_serving.py", folder / "studio_serving.py")
        for path in folder.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o444)
        # The folder is the instance user's (0700: no run can look in); what is in it stays the studio's, read-only
        # (model files are the blobs themselves, hard-linked).
        uid, gid = sandbox.run_identity(-deployment.pk) if sandbox.isolation().per_run_uid else (None, None)
        if uid is not None:
            os.chown(folder, uid, gid)
        python = self.python(deployment)
        port = _free_port()
        argv = sandbox.wrap([python, str(folder / "studio_serving.py"), "--host", "127.0.0.1", "--port", str(port)],
                            workdir=folder, python=python, info_fd=None, die_with_parent=False)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(folder), **instance_environment(deployment, str(app))}
        # a user id of its own, below the runs' (STUDIO_RUN_UID_BASE - deployment id; runs have base + run id)
        identity = {"user": uid, "group": gid, "extra_groups": []} if uid is not None else {}
        log = open(self.log_path_of(folder), "ab")
        try:
            process = subprocess.Popen(argv, cwd=app, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True, **identity)
        except OSError as error:
            raise InstanceError(f"Could not start the scoring server: {error}") from None
        finally:
            log.close()
        return Instance(deployment=deployment, revision=revision, index=index, handle=f"pid:{process.pid}",
                        host="127.0.0.1", port=port)

    @staticmethod
    def _pid(instance: Instance) -> int:
        return int(instance.handle.split(":", 1)[1]) if instance.handle.startswith("pid:") else 0

    def status(self, instance: Instance) -> tuple[str, int | None]:
        pid = self._pid(instance)
        if pid and _alive(pid):
            return "running", None
        with contextlib.suppress(ChildProcessError, OSError):
            _, status = os.waitpid(pid, os.WNOHANG)
            return "exited", os.waitstatus_to_exitcode(status) if status else None
        return "exited", None

    def restart(self, instance: Instance) -> None:
        raise InstanceError("a local instance is started again, not restarted")

    def logs(self, instance: Instance, tail: int = 60) -> str:
        path = self.log_path(instance)
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return ""

    def remove(self, instance: Instance) -> None:
        pid = self._pid(instance)
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, 0)
        folder = self.folder(instance.deployment_id, instance.revision, instance.index)
        shutil.rmtree(folder, ignore_errors=True)
        self.log_path_of(folder).unlink(missing_ok=True)

    def log_path(self, instance: Instance) -> Path:
        return self.log_path_of(self.folder(instance.deployment_id, instance.revision, instance.index))

    @staticmethod
    def log_path_of(folder: Path) -> Path:
        """Beside the folder, not in it: the instance cannot rewrite what it printed."""
        return folder.with_name(folder.name + ".console.log")


def driver_for(target):
    return DockerInstances(target) if target.kind == "docker" else LocalInstances(target)
