"""People: owners invite a colleague with a one-time link to set a password; signed-in users change theirs.

No e-mail server is needed: the invitation link is shown to the owner, who passes it on. The link is a signed token
(`django.core.signing`, salted for invitations) naming the user and a fingerprint of their current password field. It
expires after `INVITE_MAX_AGE`; it works once, because setting a password changes the field the fingerprint was made
from (and a newer link for the same person replaces the older one the same way). The owner-facing messages say which
of these happened, so the person holding a dead link knows what to do next.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm, SetPasswordForm
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.core import signing
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.crypto import salted_hmac
from django.views.decorators.http import require_http_methods, require_POST

from studio.access import get_owner_workspace_for_user
from studio.models import Membership, Role, Workspace

INVITE_MAX_AGE = timedelta(days=7)
_SALT = "studio.people.invite"


class InviteForm(forms.Form):
    username = forms.RegexField(
        max_length=150, regex=r"^[\w.@+-]+\Z",
        error_messages={"invalid": "Use letters, digits and @ . + - _ only."},
        help_text="The name they will sign in with. They choose their password with the link you get.",
    )
    role = forms.ChoiceField(choices=Role.choices, initial=Role.CONTRIBUTOR)

    def clean_username(self):
        username = self.cleaned_data["username"].strip()
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError(
                f"There is already a user named {username!r}: add them with 'Add a member' instead."
            )
        return username


def _fingerprint(user) -> str:
    return salted_hmac(_SALT, user.password).hexdigest()[:16]


def make_invite_token(user) -> str:
    """A fresh link for a user who has not set a password: older links for them stop working."""
    user.password = UNUSABLE_PASSWORD_PREFIX + secrets.token_urlsafe(30)
    user.save(update_fields=["password"])
    return signing.dumps({"u": user.pk, "f": _fingerprint(user)}, salt=_SALT, compress=True)


def invite_url(request, token: str) -> str:
    return request.build_absolute_uri(reverse("accept_invite", args=[token]))


@dataclass(frozen=True)
class InviteCheck:
    user: object | None
    problem: str = ""


def check_invite_token(token: str) -> InviteCheck:
    """The invited user, or a problem a person can act on."""
    ask = "Ask an owner of your workspace for a new link (Members page)."
    try:
        data = signing.loads(token, salt=_SALT, max_age=INVITE_MAX_AGE)
    except signing.SignatureExpired:
        return InviteCheck(None, f"This invitation link has expired (links last {INVITE_MAX_AGE.days} days). {ask}")
    except signing.BadSignature:
        return InviteCheck(None, f"This invitation link is not valid: check it was copied whole. {ask}")
    user = get_user_model().objects.filter(pk=data.get("u"), is_active=True).first() if isinstance(data, dict) else None
    if user is None:
        return InviteCheck(None, f"This invitation link is for an account that no longer exists. {ask}")
    if not secrets.compare_digest(str(data.get("f", "")), _fingerprint(user)):
        if user.has_usable_password():
            return InviteCheck(None, "This invitation link was already used to set a password: it works only once. "
                                     f"Sign in as {user.username}, or if you forgot the password, {ask[0].lower()}{ask[1:]}")
        return InviteCheck(None, f"A newer invitation link replaced this one. {ask}")
    return InviteCheck(user)


def pending(user) -> bool:
    """Invited and has not set a password yet."""
    return not user.has_usable_password() and user.last_login is None


@require_POST
@login_required
def invite_member(request, workspace: str):
    """An owner creates an account with a role in this workspace and gets the link to pass on."""
    from studio.views import render_members

    access = get_owner_workspace_for_user(request, workspace)
    form = InviteForm(request.POST, prefix="invite")
    if not form.is_valid():
        return render_members(request, access, invite_form=form, status=400)
    with transaction.atomic():
        user = get_user_model().objects.create_user(form.cleaned_data["username"])  # no password: unusable
        Membership.objects.create(workspace=access.workspace, user=user, role=form.cleaned_data["role"])
        token = make_invite_token(user)
    return render_members(request, access, invited=user, invite_link=invite_url(request, token),
                          invited_role=Role(form.cleaned_data["role"]).label)


@require_POST
@login_required
def renew_invite(request, workspace: str, membership_id: int):
    """A new link for a member who has not set a password yet (the old one expired or was lost)."""
    from studio.views import render_members

    access = get_owner_workspace_for_user(request, workspace)
    membership = get_object_or_404(Membership.objects.select_related("user"), pk=membership_id,
                                   workspace=access.workspace)
    if not pending(membership.user):
        messages.error(request, f"{membership.user.username} has already set a password: they sign in with it.")
        return redirect("members", workspace=workspace)
    token = make_invite_token(membership.user)
    return render_members(request, access, invited=membership.user, invite_link=invite_url(request, token),
                          invited_role=membership.get_role_display())


@require_http_methods(["GET", "POST"])
def accept_invite(request, invite: str):
    """The invited person chooses a password; then signs in with it."""
    found = check_invite_token(invite)
    if found.user is None:
        return render(request, "studio/accept_invite.html", {"problem": found.problem}, status=400)
    form = SetPasswordForm(found.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Your password is set. Sign in as {found.user.username} to start.")
        return redirect(f"{reverse('login')}?username={found.user.username}")
    workspaces = Workspace.objects.for_user(found.user).only("name")
    return render(request, "studio/accept_invite.html",
                  {"form": form, "invited": found.user, "invited_workspaces": workspaces},
                  status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
@login_required
def password_change(request):
    """A signed-in user changes their password; the old one is asked for. Other sessions are signed out."""
    form = PasswordChangeForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        update_session_auth_hash(request, user)
        messages.success(request, "Your password was changed. Use the new one next time you sign in.")
        return redirect("password_change")
    return render(request, "studio/password_change.html", {"form": form}, status=400 if form.errors else 200)
