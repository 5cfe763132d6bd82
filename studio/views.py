"""Workspaces: list, create and members; personal API tokens."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_GET, require_http_methods, require_POST, require_safe

from studio.access import get_owner_workspace_for_user, get_workspace_for_user
from studio.context_processors import LAST_WORKSPACE_KEY
from studio.forms import AddMemberForm, ApiTokenForm, WorkspaceForm
from studio.models import ApiToken, Membership, Role, Workspace
from studio.people import InviteForm, pending


@require_safe
def favicon(request):
    """Browsers ask for /favicon.ico whatever the page links: send them to the icon (its URL may carry a hash)."""
    return redirect(static("studio/favicon.svg"))


@require_GET
@login_required
def home(request):
    """To the workspace used last (kept in the session by the navigation), else the first one."""
    workspace = None
    last = request.session.get(LAST_WORKSPACE_KEY)
    if last:
        workspace = Workspace.objects.for_user(request.user).filter(name=last).first()
    workspace = workspace or Workspace.objects.for_user(request.user).first()
    if workspace is None:
        return redirect("workspace_list")
    return redirect("dashboard", workspace=workspace.name)


@require_http_methods(["GET", "POST"])
@login_required
def workspace_list(request):
    form = WorkspaceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        workspace = Workspace.create_with_owner(
            form.cleaned_data["name"], request.user, description=form.cleaned_data["description"]
        )
        messages.success(request, f"Workspace {workspace.name} created. You are its owner.")
        return redirect("dashboard", workspace=workspace.name)
    memberships = Membership.objects.filter(user=request.user).select_related("workspace")
    return render(
        request,
        "studio/workspace_list.html",
        {"memberships": memberships, "form": form},
        status=400 if form.errors else 200,
    )


@require_http_methods(["GET", "POST"])
@login_required
def members(request, workspace: str):
    access = get_workspace_for_user(request, workspace)
    form = AddMemberForm(workspace=access.workspace)
    if request.method == "POST":
        access = get_owner_workspace_for_user(request, workspace)
        form = AddMemberForm(request.POST, workspace=access.workspace)
        if form.is_valid():
            user = form.cleaned_data["username"]
            Membership.objects.create(workspace=access.workspace, user=user, role=form.cleaned_data["role"])
            messages.success(request, f"{user.username} is now a {form.cleaned_data['role']} of {workspace}.")
            return redirect("members", workspace=workspace)
    return render_members(request, access, form=form, status=400 if form.errors else 200)


def render_members(request, access, *, form=None, invite_form=None, status=200, **extra):
    """The Members page; after an invitation it shows the link to pass on (`invited`, `invite_link`)."""
    memberships = list(access.workspace.memberships.select_related("user"))
    for membership in memberships:
        membership.pending = pending(membership.user)
    context = {
        "access": access, "workspace": access.workspace, "memberships": memberships,
        "form": form or AddMemberForm(workspace=access.workspace), "invite_form": invite_form or InviteForm(prefix="invite"),
        **extra,
    }
    return render(request, "studio/members.html", context, status=status)


@require_POST
@login_required
def remove_member(request, workspace: str, membership_id: int):
    access = get_owner_workspace_for_user(request, workspace)
    membership = get_object_or_404(Membership, pk=membership_id, workspace=access.workspace)
    owners = access.workspace.memberships.filter(role=Role.OWNER)
    if membership.role == Role.OWNER and owners.count() == 1:
        messages.error(request, "A workspace needs at least one owner: add another owner before removing this one.")
        return redirect("members", workspace=workspace)
    membership.delete()
    messages.success(request, f"{membership.user.username} was removed from {workspace}.")
    if membership.user_id == request.user.pk:
        return redirect("home")
    return redirect("members", workspace=workspace)


@require_http_methods(["GET", "POST"])
@login_required
def api_tokens(request):
    """Personal API tokens: a new one is shown once, right after it is made."""
    form = ApiTokenForm(request.POST or None)
    secret = None
    if request.method == "POST" and form.is_valid():
        _token, secret = ApiToken.issue(request.user, form.cleaned_data["name"])
    tokens = ApiToken.objects.filter(user=request.user)
    return render(request, "studio/api_tokens.html", {"tokens": tokens, "form": form, "secret": secret},
                  status=400 if form.errors else 200)


@require_POST
@login_required
def revoke_api_token(request, token_id: int):
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
    token.delete()
    messages.success(request, f"Token {token.name} revoked: it no longer works.")
    return redirect("api_tokens")
