"""How local runs are kept from the studio is chosen once per process and said in plain words (start output, Compute
page). The sandbox itself is tested end to end in tests/faults/test_isolation.py."""

from __future__ import annotations

import pytest

from studio import sandbox


@pytest.fixture(autouse=True)
def fresh_choice():
    sandbox.isolation.cache_clear()
    yield
    sandbox.isolation.cache_clear()


def test_none_says_plainly_that_runs_are_not_isolated(settings):
    settings.STUDIO_LOCAL_ISOLATION = "none"
    current = sandbox.isolation()
    assert current.mode == "none" and not current.protected
    assert current.summary.startswith("Local runs are NOT isolated (STUDIO_LOCAL_ISOLATION=none): they run as the "
                                      "studio's own user")


def test_without_bubblewrap_or_root_the_reason_is_named(settings, monkeypatch):
    settings.STUDIO_LOCAL_ISOLATION = "auto"
    monkeypatch.setattr(sandbox, "bwrap_binary", lambda: "")
    monkeypatch.setattr(sandbox, "_is_root", lambda: False)
    current = sandbox.isolation()
    assert current.mode == "none"
    assert "(bubblewrap (bwrap) is not installed, and the studio does not run as root)" in current.summary


def test_root_without_bubblewrap_falls_back_to_a_user_id_per_run(settings, monkeypatch):
    settings.STUDIO_LOCAL_ISOLATION = "auto"
    monkeypatch.setattr(sandbox, "bwrap_binary", lambda: "")
    monkeypatch.setattr(sandbox, "_is_root", lambda: True)
    current = sandbox.isolation()
    assert current.mode == "user" and current.per_run_uid and current.protected


@pytest.mark.parametrize("wanted, root, message", [
    ("sandbox", True, "STUDIO_LOCAL_ISOLATION=sandbox, but the sandbox does not start: bubblewrap (bwrap) is not "
                      "installed"),
    ("user", False, "STUDIO_LOCAL_ISOLATION=user gives each run a user id of its own, which needs the studio to run "
                    "as root."),
])
def test_a_mode_that_cannot_be_had_stops_the_start_saying_why(settings, monkeypatch, wanted, root, message):
    settings.STUDIO_LOCAL_ISOLATION = wanted
    monkeypatch.setattr(sandbox, "bwrap_binary", lambda: "")
    monkeypatch.setattr(sandbox, "_is_root", lambda: root)
    with pytest.raises(RuntimeError) as caught:
        sandbox.isolation()
    assert str(caught.value) == message


def test_hiding_the_source_keeps_what_runs_need_reachable(settings, tmp_path):
    base = tmp_path / "checkout"
    for folder in ("studio", "runs", "sdk", "data", ".git"):
        (base / folder).mkdir(parents=True)
        (base / folder).chmod(0o755)
    (base / "manage.py").write_text("")
    (base / "manage.py").chmod(0o644)
    settings.BASE_DIR, settings.STUDIO_SDK_PATH = base, base / "sdk"
    settings.DATA_DIR, settings.STUDIO_WORK_DIR = base / "data", base / "data" / "work"
    changed = sandbox.hide_source()
    modes = {path.name: path.stat().st_mode & 0o777 for path in [base, *base.iterdir()]}
    assert modes == {"checkout": 0o711, "studio": 0o700, "runs": 0o700, ".git": 0o700, "manage.py": 0o600, "sdk": 0o755, "data": 0o755}
    assert len(changed) == 5  # the tree, studio, runs, .git, manage.py
    assert sandbox.hide_source() == []  # nothing left to change the next time
