"""The ``Tollgate-Signature`` header, exactly as Stripe signs its webhooks (plain Python).

    Tollgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>

The key is the whole secret string (``whsec_…``) as UTF-8; ``body`` is the request body
exactly as sent. A receiver recomputes the HMAC over the raw body, compares in constant
time and refuses timestamps older than a few minutes (replays)."""

import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
HEADER = "Tollgate-Signature"


def secret_generate() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def signature_verify(
    secret: str, header: str, body: bytes, *, now: int, tolerance_s: int = 300
) -> bool:
    """What a receiver does (and the tests): the header's timestamp is recent and one of
    its v1 signatures matches."""
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in parts if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    return any(k == "v1" and hmac.compare_digest(v, expected) for k, v in parts)
