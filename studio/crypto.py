"""Secrets stored at rest (registry passwords, TLS keys): Fernet, with a key derived from STUDIO_SECRET_KEY
unless STUDIO_ENCRYPTION_KEY names one. Decrypted values are only ever handed to the Docker engine."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def _fernet() -> Fernet:
    key = settings.STUDIO_ENCRYPTION_KEY or base64.urlsafe_b64encode(
        hashlib.sha256(f"studio-encryption:{settings.SECRET_KEY}".encode()).digest()
    ).decode()
    return Fernet(key)


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "A stored secret cannot be decrypted: the secret key changed since it was saved. Enter it again."
        ) from None
