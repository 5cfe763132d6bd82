"""MLflow's error shape: `{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "..."}` with the status MLflow gives
that code, so the client's own exceptions carry the studio's message (`mlflow.exceptions.RestException`).

Only these statuses are used: 400, 401, 403, 404, 405, 413 and (for a fault of the studio's own) 500. The client
retries 429 and 5xx for minutes, so bad input is never answered with either.
"""

from __future__ import annotations

import orjson
from django.http import HttpResponse

PREFIX = "/mlflow/"

INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
PERMISSION_DENIED = "PERMISSION_DENIED"
UNAUTHENTICATED = "UNAUTHENTICATED"
INVALID_STATE = "INVALID_STATE"
ENDPOINT_NOT_FOUND = "ENDPOINT_NOT_FOUND"
BAD_REQUEST = "BAD_REQUEST"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
INTERNAL_ERROR = "INTERNAL_ERROR"

STATUS = {
    INVALID_PARAMETER_VALUE: 400, RESOURCE_ALREADY_EXISTS: 400, INVALID_STATE: 400, BAD_REQUEST: 400,
    UNAUTHENTICATED: 401, PERMISSION_DENIED: 403, RESOURCE_DOES_NOT_EXIST: 404, ENDPOINT_NOT_FOUND: 404,
    RESOURCE_EXHAUSTED: 413, INTERNAL_ERROR: 500,
}
TOKEN_HELP = ("Set MLFLOW_TRACKING_TOKEN to a personal API token of the studio (make one on its API tokens page); "
              "the client sends it as 'Authorization: Bearer <token>'.")
# Errors Django makes itself (an unknown route, a wrong method), in the shape the client reads.
BY_STATUS = {
    400: (BAD_REQUEST, "The request could not be understood."),
    401: (UNAUTHENTICATED, TOKEN_HELP),
    403: (PERMISSION_DENIED, "You may not do that in this workspace."),
    404: (ENDPOINT_NOT_FOUND, "The studio's MLflow API has no such route: it serves the tracking, artifact and "
                              "model registry routes an MLflow 3 client uses."),
    405: (BAD_REQUEST, "This route does not take that method."),
    413: (RESOURCE_EXHAUSTED, "The request body is too large."),
    500: (INTERNAL_ERROR, "The studio failed to answer this request; the error is in its log."),
}


class MlflowError(Exception):
    """An error the client should see: one of MLflow's error codes and a message saying what to fix."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 400)


def invalid(message: str) -> MlflowError:
    return MlflowError(INVALID_PARAMETER_VALUE, message)


def not_found(message: str) -> MlflowError:
    return MlflowError(RESOURCE_DOES_NOT_EXIST, message)


def response(code: str, message: str, status: int | None = None) -> HttpResponse:
    body = orjson.dumps({"error_code": code, "message": message})
    answer = HttpResponse(body, status=status or STATUS.get(code, 400), content_type="application/json")
    if answer.status_code == 401:
        answer["WWW-Authenticate"] = 'Bearer realm="studio"'
    return answer


def refusal_body(status: int, message: str) -> tuple[bytes, str]:
    """The body of a refusal the request-limit handler makes before a view runs (studio/limits.py)."""
    code = BY_STATUS.get(status, (BAD_REQUEST, ""))[0]
    return orjson.dumps({"error_code": code, "message": message}), "application/json"
