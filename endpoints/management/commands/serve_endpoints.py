"""`manage.py serve_endpoints`: the endpoints' controller (endpoints/reconciler.py), supervised with the rest of the
studio by `studioctl.py start`."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from endpoints.reconciler import Reconciler


class Command(BaseCommand):
    help = "Keep every deployment's instances as the database says (start, check, restart, replace, remove)."

    def handle(self, *args, **options):
        self.stdout.write("Endpoints controller started.")
        self.stdout.flush()
        Reconciler().run_forever()
