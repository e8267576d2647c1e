"""Encryption at rest for upstream credentials (Fernet, key from settings)."""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


@cache
def _fernet() -> MultiFernet:
    configured = [k.strip() for k in settings.CREDENTIALS_KEY.split(",") if k.strip()]
    if not configured:
        derived = hashlib.sha256(b"tollgate-credentials:" + settings.SECRET_KEY.encode()).digest()
        configured = [base64.urlsafe_b64encode(derived).decode()]
    # The first key encrypts; all keys decrypt, so keys can be rotated.
    return MultiFernet([Fernet(k) for k in configured])


def credential_encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def credential_decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("upstream credential cannot be decrypted with the configured key") from exc
