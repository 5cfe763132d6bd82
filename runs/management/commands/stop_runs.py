"""Stop every run that is going, as the studio stops: `manage.py stop_runs` (the start command runs it on Ctrl-C).

Each run is canceled with the reason "The studio was stopped.": queued ones at once, running ones by their workers
(their scripts get SIGTERM, so the SDK flushes, then SIGKILL after the grace period), which are still up while this
waits. What a worker did not end in time is ended here, so nothing stays Running after the next start.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from runs.execution import RunExecution
from runs.models import ACTIVE_STATES, Run, RunStatus

REASON = "The studio was stopped."


class Command(BaseCommand):
    help = "Cancel every queued or running run, wait for them to end, and end what is left."

    def add_arguments(self, parser):
        parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for workers to stop the runs")

    def handle(self, *args, wait: float, **options):
        going = list(Run.objects.filter(status__in=(*ACTIVE_STATES, RunStatus.QUEUED)))
        for run in going:
            run.request_cancel(reason=REASON)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and Run.objects.filter(pk__in=[r.pk for r in going],
                                                                 status__in=ACTIVE_STATES).exists():
            time.sleep(0.25)
        left = Run.objects.filter(pk__in=[r.pk for r in going], status__in=ACTIVE_STATES)
        for run in left:  # its worker is gone or stuck: its script is stopped here
            execution = RunExecution(run)
            try:
                handle = execution.driver.adopt(run.pk, execution.workdir, execution.console)
                if handle is not None:
                    with handle:
                        handle.terminate(0)
            except Exception as error:  # an unreachable engine: say so, and end the run anyway
                self.stderr.write(f"Run {run.pk}: could not stop its script: {error}")
            run.end_with_descendants(RunStatus.CANCELED, f"{REASON} Its worker did not stop it in time.")
        stopped = len(going)
        self.stdout.write(f"Stopped {stopped} run{'s' if stopped != 1 else ''}"
                          + (f" ({len(left)} without their worker)" if left else "") + ".")
