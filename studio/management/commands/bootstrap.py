"""Create the first admin account and a default workspace when there are none, and say how to sign in."""

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from studio.models import Workspace


class Command(BaseCommand):
    help = "Create a first admin account and a default workspace when there are none."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--workspace", default="default")

    def handle(self, *args, username, workspace, **options):
        users = get_user_model().objects
        password_file = Path(settings.DATA_DIR) / "initial_admin_password"
        if not users.exists():
            password = secrets.token_urlsafe(12)
            users.create_superuser(username=username, email="", password=password)
            password_file.parent.mkdir(parents=True, exist_ok=True)
            password_file.touch(mode=0o600)
            password_file.write_text(password + "\n")
            self.stdout.write(f"Created the admin account {username!r}.")
        if not Workspace.objects.exists():
            owner = users.filter(is_superuser=True).order_by("pk").first() or users.order_by("pk").first()
            Workspace.create_with_owner(workspace, owner, description="Created at first start.")
            self.stdout.write(f"Created the workspace {workspace!r} owned by {owner.username!r}.")
        admin = users.filter(username=username).first()
        if admin is not None and password_file.exists() and admin.check_password(password_file.read_text().strip()):
            self.stdout.write(f"Sign in as {username!r} with the password {password_file.read_text().strip()!r} "
                              f"(kept in {password_file} until you change it).")
        else:
            self.stdout.write(f"Sign in with your account (reset a password with: manage.py changepassword {username}).")
