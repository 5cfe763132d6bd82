"""Run-scoped tokens: what a script's SDK authenticates with.

A token is `<run id>.<secret>`; the run keeps only the SHA-256 of the secret. It lets its holder write to that run
and its descendants, and stops working when the run ends.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from runs.models import Run


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(run: Run) -> str:
    secret = secrets.token_urlsafe(32)
    Run.objects.filter(pk=run.pk).update(token_hash=_digest(secret))
    run.token_hash = _digest(secret)
    return f"{run.pk}.{secret}"


def authenticate(token: str) -> Run | None:
    """The run the token was issued for, or None when the token is not one of ours."""
    run_id, _, secret = token.partition(".")
    if not run_id.isdigit() or not secret:
        return None
    run = Run.objects.filter(pk=int(run_id)).exclude(token_hash="").first()
    if run is None or not hmac.compare_digest(run.token_hash, _digest(secret)):
        return None
    return run


def in_scope(root: Run, target: Run) -> bool:
    """True when target is root or one of its descendants."""
    current, hops = target, 0
    while current is not None and hops < 100:
        if current.pk == root.pk:
            return True
        current = current.parent
        hops += 1
    return False
