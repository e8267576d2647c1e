"""Key secrets: generation and the keyed hash that is all we store."""

import hashlib
import hmac
import secrets

from django.conf import settings

INFERENCE_KEY_PREFIX = "tg-"
VISIBLE_PREFIX_LENGTH = 10


def secret_generate(prefix: str = INFERENCE_KEY_PREFIX) -> str:
    # 32 random bytes = 256 bits of entropy.
    return prefix + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    return hmac.new(settings.KEY_HASH_SECRET.encode(), secret.encode(), hashlib.sha256).hexdigest()


def secret_visible_prefix(secret: str) -> str:
    return secret[:VISIBLE_PREFIX_LENGTH]
