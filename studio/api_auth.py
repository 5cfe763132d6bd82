"""REST API access: a personal token (`Authorization: Token <token>`) names the user; the workspace role decides.

Errors are JSON: 401 without a valid token, 404 for a workspace the user is not a member of, 403 for a reader who
tries to change something, 405 for a wrong method.
"""

from __future__ import annotations

import functools

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from studio.models import ApiToken, Membership


class ApiDenied(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def api_view(*methods: str, write: bool = False):
    """Wrap a view `view(request, membership, **kwargs)`; `write` needs an owner or contributor."""

    def decorate(view):
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request, workspace: str, **kwargs):
            try:
                if request.method not in methods:
                    response = JsonResponse({"error": f"Use {' or '.join(methods)}."}, status=405)
                    response["Allow"] = ", ".join(methods)
                    return response
                membership = _membership(request, workspace, write=write)
                return view(request, membership, **kwargs)
            except ApiDenied as denied:
                return JsonResponse({"error": denied.message}, status=denied.status)

        return wrapper

    return decorate


def _membership(request, workspace: str, *, write: bool) -> Membership:
    header = request.headers.get("Authorization", "")
    scheme, _, text = header.partition(" ")
    user = ApiToken.authenticate(text.strip()) if scheme in ("Token", "Bearer") else None
    if user is None:
        raise ApiDenied(401, "Send a personal API token as 'Authorization: Token <token>' (make one on the API tokens page).")
    membership = Membership.objects.select_related("workspace").filter(workspace__name=workspace, user=user).first()
    if membership is None:
        raise ApiDenied(404, "No such workspace.")
    if write and not membership.can_write:
        raise ApiDenied(403, "Readers cannot change anything in this workspace.")
    request.user = user
    return membership
