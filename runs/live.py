"""A run's live stream and cancel signal (the mechanisms are in `studio/live.py`).

One Redis stream per run (`studio:run:<id>:events`) carries its console lines and status changes, and the events its
page follows live: `metric` (series names that got points or entries), `tags` (the run's tags as JSON) and `child`
(a child run started or changed, on the parent's stream). A cancel request is a key the run's worker checks while it
watches the script.
"""

from __future__ import annotations

import json

from django.db import transaction

from studio import live


def stream_key(run_id: int) -> str:
    return f"studio:run:{int(run_id)}:events"


def cancel_key(run_id: int) -> str:
    return f"studio:run:{int(run_id)}:cancel"


def publish_status(run_id: int, status: str) -> None:
    live.append_status(stream_key(run_id), status)


def publish_metrics(run, names) -> None:
    """Tell the run's page (and its parent's children tab) that these series got data, once the transaction commits."""
    names = ",".join(dict.fromkeys(names))[:4000]
    run_id, parent_id = run.pk, run.parent_id
    transaction.on_commit(lambda: _publish(run_id, parent_id, "metric", {"names": names}))


def publish_tags(run) -> None:
    tags = json.dumps(run.tags, separators=(",", ":"))[:60_000]
    run_id = run.pk
    transaction.on_commit(lambda: live.append_event(stream_key(run_id), "tags", {"tags": tags}))


def publish_child(parent_id: int | None, child_id: int) -> None:
    """A child run appeared or changed: its parent's page refreshes the children tab."""
    if parent_id is not None:
        transaction.on_commit(lambda: live.append_event(stream_key(parent_id), "child", {"run": str(child_id)}))


def _publish(run_id: int, parent_id: int | None, kind: str, fields: dict[str, str]) -> None:
    live.append_event(stream_key(run_id), kind, fields)
    if parent_id is not None:
        live.append_event(stream_key(parent_id), "child", {"run": str(run_id)})


def request_cancel(run_id: int, reason: str) -> None:
    live.set_signal(cancel_key(run_id), reason)


def cancel_reason(run_id: int) -> str | None:
    return live.get_signal(cancel_key(run_id))
