"""The REST API: one django-ninja `NinjaAPI` at /api/v1/ (OpenAPI document at /api/v1/openapi.json, interactive docs at
/api/v1/docs), its authentication, and the one shape of its errors.

Each app adds a `Router` in its `api.py` (mounted by `studio/urls.py`); routes fetch what they act on with the same
access helpers as pages (`studio/access.py`), so a token acts with its user's role: a non-member gets 404, a reader
who tries to change something 403.

Errors are always JSON: `{"error": "<what is wrong and how to fix it>"}`, with `"errors"` listing each invalid field
when a schema or form refused the input, and the right status (400, 401, 403, 404, 405, 409, 413). Bodies are parsed
with orjson: numbers that do not fit a float, nesting deeper than 1,024 and anything that is not JSON are a 400.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import orjson
from django.core.exceptions import BadRequest, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, ProtectedError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import Field, NinjaAPI, Router, Schema, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.renderers import BaseRenderer
from ninja.security import APIKeyHeader

from studio.access import access_for, get_in_workspace
from studio.compute_forms import ComputeTargetForm, is_builtin
from studio.docker_engine import connection_report
from studio.limits import body_limit_for, too_big_message
from studio.models import ApiToken, ComputeTarget, Membership
from studio.queues import serve_queue

logger = logging.getLogger(__name__)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
TOKEN_HELP = (
    "Send a personal API token as 'Authorization: Token <token>' or 'Authorization: Bearer <token>' "
    "(make one on the API tokens page)."
)
# Ids in paths and queries: a database key, never a number the database cannot hold.
Id = Annotated[int, Field(ge=1, le=2**62)]


class Error(Schema):
    error: str = Field(description="What is wrong and how to fix it.")
    errors: dict[str, list[str]] | None = Field(None, description="Each invalid field with its messages.")


class LogChunk(Schema):
    """Display lines of a console log from a byte offset, as the pages' polling reads them."""

    lines: list[str]
    next_offset: int
    status: str
    final: bool


class ApiError(HttpError):
    """An error with the status and message the client should see (`raise ApiError(409, "...")`), and for invalid
    input the messages of each field."""

    def __init__(self, status_code: int, message: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(status_code, message)
        self.errors = errors


def form_error(form) -> ApiError:
    """A 400 for a Django form that refused the input: its messages by field, and all of them on one line."""
    errors = {field: [str(message) for message in messages] for field, messages in form.errors.items()}
    return ApiError(400, _summary(errors), errors)


def _summary(by_field: dict[str, list[str]]) -> str:
    return ("Invalid input: " + "; ".join(f"{field}: {' '.join(messages)}" for field, messages in by_field.items()))[:2000]


class BodyError(ValueError):
    """The request body is not JSON the API can read; the message says why."""


class OrjsonParser(Parser):
    def parse_body(self, request: HttpRequest) -> Any:
        try:
            return orjson.loads(request.body)
        except orjson.JSONDecodeError as error:
            raise BodyError(f"The body is not valid JSON ({error}).") from None


class OrjsonRenderer(BaseRenderer):
    media_type = "application/json"

    def render(self, request: HttpRequest, data: Any, *, response_status: int) -> bytes:
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS, default=_default)


def _default(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class PersonalTokenAuth(APIKeyHeader):
    """A personal API token (`stu_…`) in `Authorization: Token …` or `Authorization: Bearer …`; it acts as its user.

    On a route of a workspace (a `workspace` in its path), the user's role is checked here too, before the request's
    body or query is even parsed: a non-member gets 404, a reader who sends anything but GET 403. Routes still fetch
    what they act on with the access helpers.
    """

    param_name = "Authorization"

    def authenticate(self, request: HttpRequest, key: str | None):
        scheme, _, text = (key or "").partition(" ")
        if scheme not in ("Token", "Bearer") or not text.strip().startswith("stu_"):
            return None
        user = ApiToken.authenticate(text.strip())
        if user is None:
            return None
        request.user = user
        workspace = request.resolver_match.kwargs.get("workspace") if request.resolver_match else None
        if workspace is not None:
            access_for(request, workspace, write=request.method not in SAFE_METHODS)
        return user


personal_token = PersonalTokenAuth()


def _json_error(request, status: int, message: str, **extra) -> HttpResponse:
    response = HttpResponse(orjson.dumps({"error": message, **extra}), status=status, content_type="application/json")
    if status == 401:
        response["WWW-Authenticate"] = 'Token realm="studio"'
    return response


def _field_errors(errors: list[dict]) -> tuple[str, dict[str, list[str]]]:
    """pydantic/ninja errors as one readable line and a {field: [messages]} map (inputs are never echoed)."""
    by_field: dict[str, list[str]] = {}
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        if location and location[0] in ("body", "query", "path", "form", "file", "header", "cookie"):
            location = location[1:]  # where the input was, not its name (a parameter may be called `path`)
        if location and location[0] in ("payload", "data", "fields"):
            location = location[1:]
        field = ".".join(location) or "body"
        message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
        by_field.setdefault(field, []).append(message)
    return _summary(by_field), by_field


def _handle_validation(request, exc: ValidationError):
    message, fields = _field_errors(exc.errors)
    return _json_error(request, 400, message, errors=fields)


def _handle_http_error(request, exc: HttpError):
    cause = exc.__cause__
    if isinstance(cause, BodyError):
        return _json_error(request, 400, str(cause))
    if isinstance(cause, RecursionError):
        return _json_error(request, 400, "The body is nested too deeply.")
    if isinstance(cause, RequestDataTooBig):
        return _json_error(request, 413, _too_big_message(request))
    if isinstance(exc, AuthenticationError):
        return _json_error(request, 401, TOKEN_HELP)
    if getattr(exc, "errors", None):
        return _json_error(request, exc.status_code, str(exc), errors=exc.errors)
    return _json_error(request, exc.status_code, str(exc))


def _too_big_message(request) -> str:
    return too_big_message(body_limit_for(request.path))


def _handle_django_validation(request, exc: DjangoValidationError):
    return _json_error(request, 400, " ".join(exc.messages))


def create_api() -> NinjaAPI:
    api = NinjaAPI(
        title="Studio API",
        version="1",
        description=(
            "Everything the browser does with workspaces, experiments, runs, environments and compute targets. "
            "Authenticate with a personal API token (`Authorization: Token stu_…`, or `Bearer`). Errors are JSON "
            "`{\"error\": message}` (with `errors` per field for invalid input)."
        ),
        urls_namespace="api",
        parser=OrjsonParser(),
        renderer=OrjsonRenderer(),
    )
    api.add_exception_handler(ValidationError, _handle_validation)
    api.add_exception_handler(HttpError, _handle_http_error)
    api.add_exception_handler(Http404, lambda request, exc: _json_error(request, 404, str(exc) or "Not found."))
    api.add_exception_handler(
        PermissionDenied, lambda request, exc: _json_error(request, 403, str(exc) or "You may not do that here.")
    )
    api.add_exception_handler(BadRequest, lambda request, exc: _json_error(request, 400, str(exc) or "Bad request."))
    api.add_exception_handler(DjangoValidationError, _handle_django_validation)
    api.add_exception_handler(RequestDataTooBig, lambda request, exc: _json_error(request, 413, _too_big_message(request)))
    api.add_exception_handler(
        SuspiciousOperation, lambda request, exc: _json_error(request, 400, str(exc) or "Bad request.")
    )
    api.add_exception_handler(
        RecursionError, lambda request, exc: _json_error(request, 400, "The input is nested too deeply.")
    )
    api.add_exception_handler(
        OverflowError, lambda request, exc: _json_error(request, 400, "A number in the input is too large.")
    )
    return api


def token_router(**kwargs) -> Router:
    """A router whose routes need a personal token unless they say otherwise."""
    return Router(auth=personal_token, **kwargs)


# The core's own routes: who I am, workspaces, compute targets ----------------------------------------------------------

router = token_router(tags=["workspaces and compute"])
ERRORS = {400: Error, 401: Error, 403: Error, 404: Error}


class MeOut(Schema):
    username: str
    workspaces: list[dict[str, str]]


class WorkspaceOut(Schema):
    name: str
    description: str
    role: str


class TargetOut(Schema):
    id: int
    name: str
    kind: str
    queue: str
    python_path: str
    docker_url: str
    tls: bool
    cpu_limit: float | None
    memory_limit_mb: int | None
    gpus: str
    shm_size_mb: int | None
    callback_url: str
    runs: int
    builtin: bool


class TargetIn(Schema):
    """A compute target as its edit form takes it; the TLS client key is write-only."""

    name: str
    kind: str = "local"
    queue: str = ""
    python_path: str = ""
    docker_url: str = ""
    tls_ca_cert: str = ""
    tls_client_cert: str = ""
    tls_client_key: str = ""
    cpu_limit: float | None = None
    memory_limit_mb: int | None = None
    gpus: str = ""
    shm_size_mb: int | None = None
    callback_url: str = ""


class TestOut(Schema):
    ok: bool
    message: str


@router.get("/me", response={200: MeOut, 401: Error})
def me(request):
    """The token's user and the workspaces they are a member of, with their role."""
    memberships = Membership.objects.filter(user=request.user).select_related("workspace").order_by("workspace__name")
    return {"username": request.user.username,
            "workspaces": [{"name": m.workspace.name, "role": m.role} for m in memberships]}


@router.get("/workspaces", response={200: list[WorkspaceOut], 401: Error})
def list_workspaces(request):
    memberships = Membership.objects.filter(user=request.user).select_related("workspace").order_by("workspace__name")
    return [{"name": m.workspace.name, "description": m.workspace.description, "role": m.role} for m in memberships]


@router.get("/workspaces/{workspace}", response={200: WorkspaceOut, **ERRORS})
def get_workspace(request, workspace: str):
    access = access_for(request, workspace)
    return {"name": access.workspace.name, "description": access.workspace.description, "role": access.membership.role}


def _target_json(target: ComputeTarget, runs: int | None = None) -> dict:
    return {
        "id": target.pk, "name": target.name, "kind": target.kind, "queue": target.queue,
        "python_path": target.python_path, "docker_url": target.docker_url,
        "tls": bool(target.tls_ca_cert or target.tls_client_cert or target.tls_client_key_encrypted),
        "cpu_limit": target.cpu_limit, "memory_limit_mb": target.memory_limit_mb, "gpus": target.gpus,
        "shm_size_mb": target.shm_size_mb, "callback_url": target.callback_url,
        "runs": target.runs.count() if runs is None else runs, "builtin": is_builtin(target),
    }


@router.get("/workspaces/{workspace}/compute", response={200: list[TargetOut], **ERRORS})
def list_targets(request, workspace: str):
    access = access_for(request, workspace)
    targets = ComputeTarget.objects.filter(workspace=access.workspace).annotate(run_count=Count("runs")).order_by("name")
    return [_target_json(target, target.run_count) for target in targets]


@router.post("/workspaces/{workspace}/compute", response={201: TargetOut, **ERRORS})
def create_target(request, workspace: str, payload: TargetIn):
    """Add a compute target (validated as the Compute page's form does)."""
    access = access_for(request, workspace, write=True)
    data = {key: "" if value is None else value for key, value in payload.model_dump().items()}
    form = ComputeTargetForm(data, instance=ComputeTarget(), workspace=access.workspace)
    if not form.is_valid():
        raise form_error(form)
    try:
        with transaction.atomic():
            target = form.save()
    except IntegrityError:
        raise ApiError(400, "There is already a target with this name in this workspace: choose another name.") from None
    transaction.on_commit(lambda: serve_queue(target.queue))
    return Status(201, _target_json(target, 0))


@router.get("/workspaces/{workspace}/compute/{name}", response={200: TargetOut, **ERRORS})
def get_target(request, workspace: str, name: str):
    _, target = get_in_workspace(request, workspace, ComputeTarget, name=name, missing=f"No compute target {name[:64]!r}.")
    return _target_json(target)


@router.post("/workspaces/{workspace}/compute/{name}/test", response={200: TestOut, **ERRORS})
def test_target(request, workspace: str, name: str):
    """Connect to a Docker target's engine: owners read what it found or why it could not connect; contributors only
    whether it worked (what a connection finds tells about the studio's network)."""
    access, target = get_in_workspace(request, workspace, ComputeTarget, write=True, name=name,
                                      missing=f"No compute target {name[:64]!r}.")
    connected, message = connection_report(target, owner=access.is_owner)
    return {"ok": connected, "message": message}


@router.delete("/workspaces/{workspace}/compute/{name}", response={204: None, 409: Error, **ERRORS})
def delete_target(request, workspace: str, name: str):
    """Remove a target no run uses (runs keep their target for good); the built-in local target stays."""
    _, target = get_in_workspace(request, workspace, ComputeTarget, write=True, name=name,
                                 missing=f"No compute target {name[:64]!r}.")
    if is_builtin(target):
        raise ApiError(409, "The built-in local target cannot be removed: new runs use it by default.")
    try:
        target.delete()
    except ProtectedError as error:
        raise ApiError(409, f"{target.name} cannot be removed: {len(error.protected_objects)} run(s) use it.") from None
    return Status(204, None)
