"""How every route of the MLflow API is served: one decorator, `route`, does what the studio's REST API does in its
auth class and error handlers, in MLflow's shapes.

In order, before the view sees anything of the request: the method (405), the personal token in
`Authorization: Bearer` (MLFLOW_TRACKING_TOKEN; 401), the user's role in the workspace of the URL (an outsider 404, a
reader who tries to change something 403). Then the body or query is read into the route's Pydantic schema, and every
error the view raises, or that escapes it, becomes `{"error_code", "message"}` with its status: bad input is a 400,
never a 500.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

import orjson
from django.core.exceptions import PermissionDenied, RequestAborted, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from mlflow_api import errors
from mlflow_api.errors import MlflowError
from studio.access import access_for
from studio.limits import body_limit_for, too_big_message
from studio.models import ApiToken

logger = logging.getLogger(__name__)


def json_response(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")


def authenticate(request: HttpRequest) -> None:
    """Set `request.user` from the personal token, or raise UNAUTHENTICATED. A session is never enough."""
    scheme, _, text = request.headers.get("Authorization", "").partition(" ")
    user = ApiToken.authenticate(text.strip()) if scheme.lower() in ("bearer", "token") else None
    if user is None:
        raise MlflowError(errors.UNAUTHENTICATED, errors.TOKEN_HELP)
    request.user = user


def read_json(request: HttpRequest) -> dict:
    """The body as a JSON object (an empty body is an empty object), parsed with orjson: numbers that do not fit a
    float and nesting deeper than 1,024 are refused."""
    try:
        raw = request.body
    except RequestDataTooBig:
        raise MlflowError(errors.RESOURCE_EXHAUSTED, too_big_message(body_limit_for(request.path))) from None
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise errors.invalid(f"The body is not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise errors.invalid("The body must be a JSON object.")
    return data


def read_query(request: HttpRequest, schema: type[BaseModel]) -> dict:
    """GET parameters as the client sends them: repeated names for list fields (`order_by=a&order_by=b`)."""
    data: dict[str, Any] = {}
    for name in request.GET:
        field = schema.model_fields.get(name)
        values = request.GET.getlist(name)
        is_list = field is not None and "list" in str(field.annotation)
        data[name] = values if is_list else values[-1]
    return data


UNION_MEMBER = re.compile(r"^(float|int|str|bool|none|literal\[.*\]|list\[.*\]|dict\[.*\])$")


def validation_message(error: PydanticValidationError) -> str:
    """pydantic's errors as MLflow words them: the parameter's name and what was wrong (inputs are never echoed).
    The alternatives of one field (a number, or "NaN") make one message."""
    by_field: dict[str, list[str]] = {}
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ())]
        if len(location) > 1 and UNION_MEMBER.match(location[-1]):
            location = location[:-1]
        field = ".".join(location)
        message = str(item.get("msg", "is not valid")).removeprefix("Value error, ").rstrip(".")
        if item.get("type") == "missing":
            message = "missing"
        by_field.setdefault(field, [])
        if message not in by_field[field]:
            by_field[field].append(message)
    parts = []
    for field, messages in list(by_field.items())[:5]:
        if messages == ["missing"]:
            parts.append(f"Missing value for required parameter '{field}'.")
        elif field:
            parts.append(f"Invalid value for parameter '{field}': {'; or '.join(messages)}.")
        else:
            parts.append(f"{'; '.join(messages)}.")
    return " ".join(parts)


def route(methods: tuple[str, ...] | str, *, write: bool | tuple[str, ...] = False,
          schema: type[BaseModel] | None = None):
    """Serve an MLflow route: `view(request, access, payload, **path kwargs)` (payload: the schema's instance, or
    None).

    `write` (True, or the methods that change something) needs an owner or contributor; readers may use the rest,
    whatever its method (MLflow searches with POST).
    """
    allowed = (methods,) if isinstance(methods, str) else tuple(methods)

    def decorate(view: Callable) -> Callable:
        @csrf_exempt
        @functools.wraps(view)
        def serve(request: HttpRequest, workspace: str, **kwargs) -> HttpResponse:
            if request.method not in allowed and not (request.method == "HEAD" and "GET" in allowed):
                answer = errors.response(errors.BAD_REQUEST, f"This route takes {', '.join(allowed)}.", 405)
                answer["Allow"] = ", ".join(allowed)
                return answer
            try:
                authenticate(request)
                changes = write is True or (isinstance(write, tuple) and request.method in write)
                access = access_for(request, workspace, write=changes)
                payload = None
                if schema is not None:
                    data = read_query(request, schema) if request.method in ("GET", "HEAD") else read_json(request)
                    payload = schema.model_validate(data)
                return view(request, access, payload, **kwargs)
            except MlflowError as error:
                return errors.response(error.code, error.message)
            except PydanticValidationError as error:
                return errors.response(errors.INVALID_PARAMETER_VALUE, validation_message(error))
            except Http404 as error:
                return errors.response(errors.RESOURCE_DOES_NOT_EXIST, str(error) or "Not found.")
            except PermissionDenied as error:
                return errors.response(errors.PERMISSION_DENIED, str(error) or "You may not do that here.")
            except DjangoValidationError as error:
                return errors.response(errors.INVALID_PARAMETER_VALUE, " ".join(error.messages))
            except RequestDataTooBig:
                return errors.response(errors.RESOURCE_EXHAUSTED, too_big_message(body_limit_for(request.path)))
            except RequestAborted:
                raise  # the client went away: nobody to answer
            except (RecursionError, OverflowError) as error:
                return errors.response(errors.INVALID_PARAMETER_VALUE, f"The input could not be read: {error}.")
            except Exception:  # a fault of the studio's: said in MLflow's shape, and logged
                logger.exception("MLflow API %s %s failed", request.method, request.path)
                return errors.response(errors.INTERNAL_ERROR, errors.BY_STATUS[500][1])

        return serve

    return decorate
