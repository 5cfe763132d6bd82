"""What can be done to endpoints, for the pages and the REST API alike: create one (with two fresh keys), regenerate a
key, split and mirror traffic, create, update and delete deployments, delete the endpoint. Every check lives here and
says what is wrong and what to do; the controller (endpoints/reconciler.py) and the gateway are told at once.
"""

from __future__ import annotations

import hashlib
import secrets

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from endpoints import reconciler, routing
from endpoints.models import MAX_MIRROR_PERCENT, Deployment, DeploymentEvent, DeploymentModel, DeploymentState, Endpoint
from environments.models import Environment
from models_registry import registry
from models_registry.models import ModelVersion
from studio.crypto import decrypt, encrypt
from studio.models import NAME_VALIDATOR, ComputeTarget
from studio.text import bidi_problem

MAX_SCRIPT_BYTES = 1024 * 1024
MAX_INSTANCES = 16
MAX_EXTRA_MODELS = 20
MAX_TIMEOUT_MS = 300_000
MAX_CONCURRENT = 1000
KEY_NAMES = ("primary", "secondary")


class EndpointError(ValueError):
    """A request refused; the message says why and what to do."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.status = status


def _user(user):
    return user if getattr(user, "is_authenticated", False) else None


def check_name(name: str, what: str) -> str:
    name = (name or "").strip()
    try:
        NAME_VALIDATOR(name)
    except ValidationError:
        raise EndpointError(f"{name[:80]!r} cannot be {what} name: use 1-255 letters, digits, '-', '_' or '.', "
                            "starting with a letter or digit.") from None
    if len(name) > 63:
        raise EndpointError(f"{what.capitalize()} name is {len(name)} characters long: at most 63 (it is part of "
                            "the scoring URL and of container names).")
    return name


def _event(endpoint: Endpoint, user, text: str, deployment: str = "") -> None:
    DeploymentEvent.objects.create(endpoint=endpoint, deployment=deployment, by=_user(user), text=text[:2000])


# Endpoints -------------------------------------------------------------------------------------------------------


def new_key() -> str:
    return secrets.token_urlsafe(32)


def create_endpoint(workspace, user, name: str, description: str = "", capture_percent: int = 0) -> Endpoint:
    name = check_name(name, "an endpoint")
    description = check_description(description)
    capture_percent = check_percent(capture_percent, "Payload capture")
    try:
        with transaction.atomic():
            endpoint = Endpoint.objects.create(
                workspace=workspace, name=name, description=description, created_by=_user(user),
                primary_key_encrypted=encrypt(new_key()), secondary_key_encrypted=encrypt(new_key()),
                capture_percent=capture_percent)
            _event(endpoint, user, "Endpoint created.")
    except IntegrityError:
        raise EndpointError(f"This workspace already has an endpoint named {name}.", status=409) from None
    routing.notify()  # the gateway knows it at once (its keys, even before a deployment: 503, not 404)
    return endpoint


def check_description(text: str | None) -> str:
    text = (text or "").strip()
    if len(text) > 10_000:
        raise EndpointError("The description is longer than 10,000 characters.")
    problem = bidi_problem(text)
    if problem:
        raise EndpointError(f"The description {problem}.")
    return text


def check_percent(value, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise EndpointError(f"{what} must be a whole percent from 0 to 100, not {str(value)[:20]!r}.") from None
    if isinstance(value, float) and value != number or isinstance(value, bool):
        raise EndpointError(f"{what} must be a whole percent from 0 to 100, not {value!r}.")
    if not 0 <= number <= 100:
        raise EndpointError(f"{what} must be a whole percent from 0 to 100, not {number}.")
    return number


def keys(endpoint: Endpoint) -> dict[str, str]:
    """The keys in clear (for contributors and owners only: callers check)."""
    found = {}
    for which in KEY_NAMES:
        try:
            found[which] = decrypt(getattr(endpoint, f"{which}_key_encrypted"))
        except ValueError:
            found[which] = ""  # the studio's secret key changed: regenerate it
    return found


def regenerate_key(endpoint: Endpoint, which: str, user) -> str:
    if which not in KEY_NAMES:
        raise EndpointError(f"{str(which)[:20]!r} is not a key: say primary or secondary.")
    key = new_key()
    with transaction.atomic():
        Endpoint.objects.filter(pk=endpoint.pk).update(**{f"{which}_key_encrypted": encrypt(key)})
        _event(endpoint, user, f"The {which} key was regenerated; the old one no longer works.")
    setattr(endpoint, f"{which}_key_encrypted", encrypt(key))
    routing.notify()
    return key


def update_endpoint(endpoint: Endpoint, user, *, description=None, capture_percent=None) -> Endpoint:
    fields = []
    if description is not None:
        endpoint.description = check_description(description)
        fields.append("description")
    if capture_percent is not None:
        endpoint.capture_percent = check_percent(capture_percent, "Payload capture")
        fields.append("capture_percent")
        _event(endpoint, user, f"Payload capture set to {endpoint.capture_percent} % of requests.")
    if fields:
        endpoint.save(update_fields=fields)
        routing.notify()
    return endpoint


def _split(raw, what: str, names: set[str]) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise EndpointError(f"{what} must map deployment names to whole percents.")
    split = {}
    for name, percent in raw.items():
        if name not in names:
            raise EndpointError(f"{what} names {str(name)[:80]!r}, which is not a deployment of this endpoint.")
        value = check_percent(percent, f"{what} for {name}")
        if value:
            split[name] = value
    return split


def set_traffic(endpoint: Endpoint, user, traffic=None, mirror=None) -> Endpoint:
    """Replace the traffic split (whole percents summing to 100, or nothing at all) and/or the mirror percentages
    (at most 50 in total, never to a deployment that also takes live traffic)."""
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        names = set(endpoint.deployments.exclude(state=DeploymentState.DELETING).values_list("name", flat=True))
        new_traffic = _split(traffic, "Traffic", names) if traffic is not None else {
            k: v for k, v in endpoint.traffic.items() if k in names}
        new_mirror = _split(mirror, "Mirror", names) if mirror is not None else {
            k: v for k, v in endpoint.mirror.items() if k in names}
        total = sum(new_traffic.values())
        if new_traffic and total != 100:
            raise EndpointError(f"The traffic split adds up to {total} %: it must add up to 100 %.")
        mirrored = sum(new_mirror.values())
        if mirrored > MAX_MIRROR_PERCENT:
            raise EndpointError(f"Mirroring adds up to {mirrored} %: at most {MAX_MIRROR_PERCENT} % of requests can "
                                "be mirrored.")
        both = sorted(set(new_traffic) & set(new_mirror))
        if both:
            raise EndpointError(f"{', '.join(both)} takes live traffic, so it cannot also get mirrored traffic.")
        if new_traffic == endpoint.traffic and new_mirror == endpoint.mirror:
            return endpoint
        endpoint.traffic, endpoint.mirror = new_traffic, new_mirror
        endpoint.save(update_fields=["traffic", "mirror"])
        _event(endpoint, user, "Traffic: " + (", ".join(f"{k} {v} %" for k, v in sorted(new_traffic.items()))
                                               or "none") + (
            "; mirror: " + ", ".join(f"{k} {v} %" for k, v in sorted(new_mirror.items())) if new_mirror else "") + ".")
    routing.notify()
    return endpoint


def delete_endpoint(endpoint: Endpoint, user) -> None:
    """Its instances stop and it goes (the controller does it within a second); scoring answers 404 at once."""
    Endpoint.objects.filter(pk=endpoint.pk).update(deleting=True)
    Deployment.objects.filter(endpoint=endpoint).update(state=DeploymentState.DELETING)
    _event(endpoint, user, "Endpoint deleted.")
    routing.notify()
    reconciler.wake()


# Deployments -----------------------------------------------------------------------------------------------------


def check_script(name: str, content: bytes) -> tuple[str, str]:
    """(file name, source) of an uploaded scoring script, refused unless it is Python that compiles."""
    name = (name or "score.py").replace("\\", "/").rsplit("/", 1)[-1].strip() or "score.py"
    problem = bidi_problem(name)
    if problem or len(name) > 255 or not name.endswith(".py"):
        raise EndpointError("The scoring script must be a Python file (name ending in .py, at most 255 characters, "
                            "no control characters).")
    if len(content) > MAX_SCRIPT_BYTES:
        raise EndpointError(f"The scoring script is {len(content):,} bytes: at most {MAX_SCRIPT_BYTES:,}.", status=413)
    try:
        source = content.decode("utf-8")
    except UnicodeDecodeError:
        raise EndpointError("The scoring script is not UTF-8 text.") from None
    try:
        compile(source, name, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:
        line = getattr(error, "lineno", None)
        raise EndpointError(f"The scoring script does not compile{f' (line {line})' if line else ''}: "
                            f"{getattr(error, 'msg', error)}.") from None
    if "def init" not in source or "def run" not in source:
        raise EndpointError("The scoring script must define init() and run(...) (Azure Machine Learning's contract).")
    return name, source


def script_from_snapshot(version: ModelVersion, path: str) -> tuple[str, bytes]:
    """A script from the snapshot of the run that made the version."""
    from studio import blobs

    run = version.run
    snapshot = getattr(run, "snapshot", None) if run else None
    entry = snapshot.entry(path) if snapshot else None
    if entry is None:
        raise EndpointError(f"{path[:200]!r} is not a file of the source run's snapshot.")
    if entry["size"] > MAX_SCRIPT_BYTES:
        raise EndpointError(f"{path} is {entry['size']:,} bytes: a scoring script is at most {MAX_SCRIPT_BYTES:,}.")
    with blobs.open_blob(entry["sha256"]) as handle:
        return path, handle.read()


def snapshot_scripts(version: ModelVersion) -> list[str]:
    run = version.run
    snapshot = getattr(run, "snapshot", None) if run else None
    if snapshot is None:
        return []
    return [item["path"] for item in snapshot.manifest if item["path"].endswith(".py")][:500]


def resolve_models(workspace, reference: str, extra: list[str] | None = None) -> tuple[ModelVersion, list]:
    try:
        main = registry.resolve(workspace, reference)
        others = [registry.resolve(workspace, item) for item in (extra or []) if item and item.strip()]
    except registry.RegistryError as error:
        raise EndpointError(str(error), status=400) from None
    if len(others) > MAX_EXTRA_MODELS:
        raise EndpointError(f"A deployment serves at most {MAX_EXTRA_MODELS + 1} models.")
    seen = {(main.model.name)}
    for version in others:
        if version.model.name in seen:
            raise EndpointError(f"The model {version.model.name} is named twice: a deployment serves one version "
                                "of each model (AZUREML_MODEL_DIR holds one folder per model).")
        seen.add(version.model.name)
    return main, others


def _check_environment(workspace, environment: Environment | None) -> None:
    if environment is None:
        return
    if environment.workspace_id not in (None, workspace.pk):
        raise EndpointError("That environment belongs to another workspace.", status=404)


def _check_target(workspace, target: ComputeTarget) -> None:
    if target is None or target.workspace_id != workspace.pk:
        raise EndpointError("Pick a compute target of this workspace.", status=404)
    if target.kind not in ("docker", "local"):
        raise EndpointError(f"Endpoints run on a Docker target or the local target, not on {target.kind}.")


def _bounded(value, what: str, low: int, high: int, *, optional: bool = False):
    if value in (None, "") and optional:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise EndpointError(f"{what} must be a whole number from {low} to {high:,}.") from None
    if not low <= number <= high:
        raise EndpointError(f"{what} must be from {low} to {high:,}, not {number:,}.")
    return number


def _cpu(value):
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EndpointError("The CPU limit must be a number of cores, such as 0.5 or 2.") from None
    if not 0.01 <= number <= 256:
        raise EndpointError("The CPU limit must be from 0.01 to 256 cores.")
    return number


SETTINGS = ("instance_count", "cpu_limit", "memory_limit_mb", "request_timeout_ms", "max_concurrent_requests")


def _settings(values: dict) -> dict:
    checked = {}
    if "instance_count" in values:
        checked["instance_count"] = _bounded(values["instance_count"], "The instance count", 1, MAX_INSTANCES)
    if "cpu_limit" in values:
        checked["cpu_limit"] = _cpu(values["cpu_limit"])
    if "memory_limit_mb" in values:
        checked["memory_limit_mb"] = _bounded(values["memory_limit_mb"], "The memory limit (MiB)", 64, 1_048_576,
                                              optional=True)
    if "request_timeout_ms" in values:
        checked["request_timeout_ms"] = _bounded(values["request_timeout_ms"], "The request timeout (ms)", 100,
                                                 MAX_TIMEOUT_MS)
    if "max_concurrent_requests" in values:
        checked["max_concurrent_requests"] = _bounded(values["max_concurrent_requests"],
                                                      "The maximum of concurrent requests", 1, MAX_CONCURRENT)
    return checked


def create_deployment(endpoint: Endpoint, user, name: str, *, model: str, compute_target: ComputeTarget,
                      environment: Environment | None = None, script: tuple[str, bytes] | None = None,
                      extra_models: list[str] | None = None, traffic: int | None = None, **values) -> Deployment:
    """A new deployment; the first of an endpoint takes all its traffic, later ones take `traffic` percent (0 by
    default: move traffic once it is Healthy)."""
    workspace = endpoint.workspace
    name = check_name(name, "a deployment")
    version, others = resolve_models(workspace, model, extra_models)
    _check_environment(workspace, environment)
    _check_target(workspace, compute_target)
    script_name, source = check_script(*script) if script else ("", "")
    if not source and version.framework != "mlflow":
        raise EndpointError(f"{version.model.name}:{version.version} is not an MLflow model (no MLmodel with a "
                            "python_function flavor): upload a scoring script with init() and run().")
    checked = _settings({"instance_count": 1, **values})
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        if endpoint.deleting:
            raise EndpointError("This endpoint is being deleted.", status=409)
        if endpoint.deployments.filter(name=name).exists():
            raise EndpointError(f"The endpoint {endpoint.name} already has a deployment named {name}.", status=409)
        deployment = Deployment.objects.create(
            endpoint=endpoint, name=name, model_version=version, environment=environment,
            compute_target=compute_target, scoring_name=script_name, scoring_source=source,
            scoring_sha256=hashlib.sha256(source.encode()).hexdigest() if source else "", created_by=_user(user),
            state=DeploymentState.BUILDING, reason="Waiting for the endpoints controller.", **checked)
        DeploymentModel.objects.bulk_create(DeploymentModel(deployment=deployment, model_version=v) for v in others)
        _event(endpoint, user, f"Deployment created: {_describe(deployment, others)}.", name)
        existing = {k: v for k, v in endpoint.traffic.items() if k != name}
        if not existing:
            endpoint.traffic = {name: 100}
            endpoint.save(update_fields=["traffic"])
    if existing and traffic:
        share = check_percent(traffic, "Traffic")
        rest = dict(existing)
        _take(rest, share)
        set_traffic(endpoint, user, traffic={**rest, name: share})
        deployment.endpoint.refresh_from_db()
    reconciler.wake()
    return deployment


def _take(split: dict[str, int], share: int) -> None:
    """Take `share` percent from the others, largest first, so the split still adds up to 100."""
    left = share
    for key in sorted(split, key=lambda k: -split[k]):
        taken = min(split[key], left)
        split[key] -= taken
        left -= taken
    if left:
        raise EndpointError("There is not enough traffic to move.")


def _describe(deployment: Deployment, others=()) -> str:
    version = deployment.model_version
    parts = [f"model {version.model.name}:{version.version}"]
    parts += [f"{v.model.name}:{v.version}" for v in others]
    parts.append(f"script {deployment.scoring_name} ({deployment.scoring_sha256[:8]})" if deployment.scoring_sha256
                 else "MLflow model served as it is")
    environment = deployment.environment
    parts.append(f"environment {environment.name}:{environment.version}" if environment else "no environment")
    parts.append(f"target {deployment.compute_target.name}")
    parts.append(f"{deployment.instance_count} instance{'s' if deployment.instance_count != 1 else ''}")
    return ", ".join(parts)


def update_deployment(deployment: Deployment, user, *, model: str | None = None,
                      environment: Environment | None | bool = False, script: tuple[str, bytes] | None = None,
                      extra_models: list[str] | None = None, **values) -> Deployment:
    """Change what a deployment serves: a new revision starts beside the live one and takes over once ready."""
    workspace = deployment.endpoint.workspace
    changes = []
    updates = {}
    others = None
    if model is not None or extra_models is not None:
        version, others = resolve_models(workspace, model or f"{deployment.model_version.model.name}:"
                                                             f"{deployment.model_version.version}", extra_models)
        if version.pk != deployment.model_version_id:
            updates["model_version"] = version
            changes.append(f"model {version.model.name}:{version.version}")
    if environment is not False:
        _check_environment(workspace, environment)
        if (environment.pk if environment else None) != deployment.environment_id:
            updates["environment"] = environment
            changes.append(f"environment {environment.name}:{environment.version}" if environment
                           else "no environment")
    if script is not None:
        script_name, source = check_script(*script)
        sha = hashlib.sha256(source.encode()).hexdigest()
        if sha != deployment.scoring_sha256:
            updates.update(scoring_name=script_name, scoring_source=source, scoring_sha256=sha)
            changes.append(f"script {script_name} ({sha[:8]})")
    checked = _settings({k: v for k, v in values.items() if k in SETTINGS})
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise EndpointError(f"Unknown setting: {', '.join(unknown)}.")
    for key, value in checked.items():
        if getattr(deployment, key) != value:
            updates[key] = value
            changes.append(f"{key.replace('_', ' ')} {value if value is not None else 'none'}")
    final_version = updates.get("model_version", deployment.model_version)
    final_script = updates.get("scoring_sha256", deployment.scoring_sha256)
    if not final_script and final_version.framework != "mlflow":
        raise EndpointError("This model is not an MLflow model: the deployment needs a scoring script.")
    old_extra = set(deployment.deploymentmodel_set.values_list("model_version_id", flat=True))
    extra_changed = others is not None and {v.pk for v in others} != old_extra
    if extra_changed:
        changes.append("further models " + (", ".join(f"{v.model.name}:{v.version}" for v in others) or "none"))
    if not changes:
        return deployment
    with transaction.atomic():
        locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if locked.state == DeploymentState.DELETING:
            raise EndpointError("This deployment is being deleted.", status=409)
        for key, value in updates.items():
            setattr(locked, key, value)
        locked.revision += 1
        locked.state = DeploymentState.UPDATING if locked.live_revision else DeploymentState.BUILDING
        locked.reason = f"Revision {locked.revision} waits for the endpoints controller."
        locked.save()
        if extra_changed:
            DeploymentModel.objects.filter(deployment=locked).delete()
            DeploymentModel.objects.bulk_create(DeploymentModel(deployment=locked, model_version=v) for v in others)
        _event(locked.endpoint, user, f"Revision {locked.revision}: " + ", ".join(changes) + ".", locked.name)
    reconciler.wake()
    return locked


def delete_deployment(deployment: Deployment, user) -> None:
    endpoint = deployment.endpoint
    others = endpoint.deployments.exclude(pk=deployment.pk).exclude(state=DeploymentState.DELETING).exists()
    if others and endpoint.traffic.get(deployment.name):
        raise EndpointError(f"{deployment.name} takes {endpoint.traffic[deployment.name]} % of the traffic: move "
                            "it to other deployments first.", status=409)
    with transaction.atomic():
        Deployment.objects.filter(pk=deployment.pk).update(state=DeploymentState.DELETING, reason="Stopping.")
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        endpoint.traffic = {k: v for k, v in endpoint.traffic.items() if k != deployment.name}
        endpoint.mirror = {k: v for k, v in endpoint.mirror.items() if k != deployment.name}
        endpoint.save(update_fields=["traffic", "mirror"])
        _event(endpoint, user, "Deployment deleted: its instances stop.", deployment.name)
    routing.notify()
    reconciler.wake()
