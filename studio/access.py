"""Access helpers. Views call one of these before anything else happens.

A user who is not a member gets 404 (the workspace's existence is not disclosed);
a member whose role is too weak for the action gets 403.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from studio.models import Membership, Role, Workspace


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


def get_workspace_for_user(request: HttpRequest, workspace_name: str) -> Access:
    """Any member may read."""
    membership = _membership(request, workspace_name)
    return Access(membership.workspace, membership)


def get_rw_workspace_for_user(request: HttpRequest, workspace_name: str) -> Access:
    """Owners and contributors may change things; readers get 403."""
    access = get_workspace_for_user(request, workspace_name)
    if not access.can_write:
        raise PermissionDenied("Readers cannot change anything in this workspace.")
    return access


def get_owner_workspace_for_user(request: HttpRequest, workspace_name: str) -> Access:
    """Only owners manage members."""
    access = get_workspace_for_user(request, workspace_name)
    if access.membership.role != Role.OWNER:
        raise PermissionDenied("Only owners of this workspace can do that.")
    return access
