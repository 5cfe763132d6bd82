"""Access helpers. Views and API routes call one of these before anything else happens.

A user who is not a member gets 404 (the workspace's existence is not disclosed); a member whose role is too weak for
the action gets 403; an object that is not in the workspace gets 404. API routes set `request.user` from the token
first, so pages and the API answer the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest

from studio.models import Membership, Role, Workspace

READERS_CANNOT = "Readers cannot change anything in this workspace."
OWNERS_ONLY = "Only owners of this workspace can do that."


@dataclass(frozen=True)
class Access:
    workspace: Workspace
    membership: Membership

    @property
    def can_write(self) -> bool:
        return self.membership.can_write

    @property
    def is_owner(self) -> bool:
        return self.membership.is_owner


def _membership(request: HttpRequest, workspace_name: str) -> Membership:
    if not request.user.is_authenticated:
        raise Http404("No such workspace.")
    membership = (
        Membership.objects.select_related("workspace")
        .filter(workspace__name=workspace_name, user=request.user)
        .first()
    )
    if membership is None:
        raise Http404("No such workspace.")
    return membership


def access_for(request: HttpRequest, workspace_name: str, *, write: bool = False, owner: bool = False) -> Access:
    """Any member may read; `write` needs an owner or contributor, `owner` an owner."""
    membership = _membership(request, workspace_name)
    if owner and membership.role != Role.OWNER:
        raise PermissionDenied(OWNERS_ONLY)
    if write and not membership.can_write:
        raise PermissionDenied(READERS_CANNOT)
    return Access(membership.workspace, membership)


def get_workspace_for_user(request: HttpRequest, workspace_name: str) -> Access:
    """Any member may read."""
    return access_for(request, workspace_name)


def get_rw_workspace_for_user(request: HttpRequest, workspace_name: str) -> Access:
    """Owners and contributors may change things; readers get 403."""
    return access_for(request, workspace_name, write=True)


def get_owner_workspace_for_user(request: HttpRequest, workspace_name: str) -> Access:
    """Only owners manage members."""
    return access_for(request, workspace_name, owner=True)


def get_in_workspace(
    request: HttpRequest,
    workspace_name: str,
    queryset: QuerySet | type[Model],
    *,
    write: bool = False,
    owner: bool = False,
    missing: str = "Not found in this workspace.",
    **lookup,
) -> tuple[Access, Model]:
    """The workspace access and the one object of `queryset` in that workspace matching `lookup`.

    404 for an outsider or an object that is not there, 403 for a role too weak: in that order, so an outsider never
    learns what exists and a reader is told why before anything else.
    """
    access = access_for(request, workspace_name, write=write, owner=owner)
    if not isinstance(queryset, QuerySet):
        queryset = queryset._default_manager.all()
    found = queryset.filter(workspace=access.workspace, **lookup).first()
    if found is None:
        raise Http404(missing)
    return access, found
