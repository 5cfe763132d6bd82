"""Django's system checks pass. The start command's `prepare` skips them (they import every view, about a second of
each start), so the suite runs them instead."""

import io

from django.core.management import call_command


def test_the_system_checks_find_nothing():
    out = io.StringIO()
    call_command("check", "--fail-level", "WARNING", stdout=out, stderr=out)  # raises SystemCheckError otherwise
    assert "no issues" in out.getvalue()
