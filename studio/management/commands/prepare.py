"""Everything the start command needs done before the processes start, in one Django process (each start of Django
costs about a second): migrate, make the first admin account and workspace, and collect the static files when they
changed since the last time. Django's system checks are not run here (they import every URL and view, about a
second of each start; `manage.py check` runs them, and the test suite does)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles.finders import get_finders
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.test.utils import override_settings


def static_digest() -> str:
    """Changes when any static file the finders know changes (a new file, another size or time)."""
    listing = []
    for finder in get_finders():
        for path, storage in finder.list([]):
            full = Path(storage.path(path))
            info = full.stat()
            listing.append((path, info.st_size, info.st_mtime_ns))
    return hashlib.sha256(repr(sorted(listing)).encode()).hexdigest()


class Command(BaseCommand):
    help = "Migrate, bootstrap and collect the static files (when they changed): what `studioctl.py start` needs."
    requires_system_checks = []

    def handle(self, *args, **options):
        call_command("migrate", "--noinput", verbosity=0)
        call_command("bootstrap")
        self.say_isolation()
        root = Path(settings.STATIC_ROOT)
        stamp = root / ".collected.sha256"
        digest = static_digest()
        if stamp.exists() and stamp.read_text() == digest and (root / "staticfiles.json").exists():
            return
        self.stdout.write("Collecting the static files (compressed, with hashed names)…")
        with self.settings_for_collecting():
            call_command("collectstatic", "--noinput", "--clear", verbosity=0)
        stamp.write_text(digest)

    def say_isolation(self) -> None:
        """How local runs are kept from the studio, in plain words (the Compute page says the same)."""
        from studio.sandbox import hide_source, isolation

        current = isolation()
        style = self.style.SUCCESS if current.protected else self.style.WARNING
        self.stdout.write(style(f"[studio] {current.summary}"))
        if current.mode == "user":
            changed = hide_source()
            if changed:
                self.stdout.write(f"[studio] made {len(changed)} entries of {settings.BASE_DIR} readable by their "
                                  "owner only, so runs cannot read the studio's source")

    @staticmethod
    def settings_for_collecting():
        storages = {**settings.STORAGES,
                    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}}
        return override_settings(STORAGES=storages)
