"""Disks fill up: whatever could not be kept is said on the run, the exit code is kept, and no truncated file is
offered as whole. A small tmpfs is mounted over the run's console folder or its outputs folder before the run starts
(root only: skipped otherwise, saying why)."""

from __future__ import annotations

import contextlib
import subprocess

import pytest

from runs import storage
from runs.models import RunStatus
from tests.faults.conftest import is_root, wait_final

pytestmark = [
    pytest.mark.e2e, pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not is_root(), reason="mounting a small tmpfs to fill needs root"),
]


@contextlib.contextmanager
def full_disk_for(stack, token, script: str, folder: str, size: str):
    """Submit `script` with the run's `folder` (under its storage) on a tmpfs of `size`; yields the run id."""
    stack.supervisorctl("stop", "worker")
    mounted = None
    try:
        run_id = stack.submit(token, script)
        mounted = storage.run_dir(run_id) / folder
        mounted.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mounted)], check=True)
        stack.supervisorctl("start", "worker")
        yield run_id
    finally:
        stack.supervisorctl("start", "worker")
        if mounted is not None:
            subprocess.run(["umount", "-l", str(mounted)], check=False)


def test_a_console_log_that_cannot_be_written_is_said_on_the_run_with_how_much_was_lost(stack, token):
    script = "for i in range(20000):\n    print('x' * 99, flush=(i % 100 == 0))\nprint('done')\n"
    with full_disk_for(stack, token, script, "logs", "256k") as run_id:
        run = wait_final(run_id, stack=stack)
    assert run.status == RunStatus.COMPLETED and run.exit_code == 0
    assert "of console output could not be written to the log file (No space left on device)" in run.reason
    lost = int(run.reason.split(" bytes (")[0].replace(",", "").split()[-1])
    assert lost > 1_500_000  # 2,000,000 bytes printed, at most 256 KiB kept


def test_outputs_that_do_not_fit_are_named_on_the_run_and_never_offered_truncated(stack, token):
    script = (
        "import os\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/small.txt', 'w').write('kept')\n"
        "open('outputs/big.bin', 'wb').write(os.urandom(2_000_000))\n"
    )
    with full_disk_for(stack, token, script, "outputs", "512k") as run_id:
        run = wait_final(run_id, stack=stack)
        stored = {item["path"] for item in storage.list_stored_files(run_id)}
    assert run.status == RunStatus.COMPLETED and run.exit_code == 0
    assert "Not stored: outputs/big.bin (could not be stored: No space left on device)." in run.reason
    assert "outputs/small.txt" in stored and "outputs/big.bin" not in stored
