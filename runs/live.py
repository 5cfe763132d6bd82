"""A run's live stream and cancel signal (the mechanisms are in `studio/live.py`).

One Redis stream per run (`studio:run:<id>:events`) carries its console lines and status changes; a cancel request is
a key the run's worker checks while it watches the script.
"""

from __future__ import annotations

from studio import live


def stream_key(run_id: int) -> str:
    return f"studio:run:{int(run_id)}:events"


def cancel_key(run_id: int) -> str:
    return f"studio:run:{int(run_id)}:cancel"


def publish_status(run_id: int, status: str) -> None:
    live.append_status(stream_key(run_id), status)


def request_cancel(run_id: int, reason: str) -> None:
    live.set_signal(cancel_key(run_id), reason)


def cancel_reason(run_id: int) -> str | None:
    return live.get_signal(cancel_key(run_id))
