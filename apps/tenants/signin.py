"""Throttling of failed sign-ins (dashboard and Django admin alike).

An authentication backend around Django's ModelBackend: 5 failed attempts for one
username from one IP address within 15 minutes lock that pair for 15 minutes (from the
last failure), whether the next password is right or not. Counters live in Redis (shared
by every web process; the in-process stand-in in the embedded default). If Redis is
unreachable, sign-in is not blocked (the password is still checked).
"""

import contextlib
import hashlib
import logging

import redis
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied

from apps.core.redis import sync_client

log = logging.getLogger(__name__)

KEY_PREFIX = "tollgate:signin:fail:"


def _limit() -> int:
    return getattr(settings, "SIGNIN_MAX_FAILURES", 5)


def _window() -> int:
    return getattr(settings, "SIGNIN_LOCK_SECONDS", 15 * 60)


def client_ip(request) -> str:
    """REMOTE_ADDR (set SECURE_PROXY_SSL_HEADER / a trusted proxy's real-IP handling in
    front; X-Forwarded-For is not trusted here, any client can send it)."""
    if request is None:
        return "-"
    return str(request.META.get("REMOTE_ADDR") or "-")


def _key(username: str, ip: str) -> str:
    digest = hashlib.sha256(f"{username.strip().lower()}\x00{ip}".encode()).hexdigest()
    return KEY_PREFIX + digest


def signin_locked(*, username: str, ip: str) -> bool:
    """True if this username may not sign in from this IP now."""
    try:
        count = sync_client().get(_key(username, ip))
    except redis.RedisError:
        return False
    return count is not None and int(count) >= _limit()


def signin_failure_record(*, username: str, ip: str) -> int:
    """Count a failure; returns the failures in the current window."""
    key = _key(username, ip)
    try:
        pipe = sync_client().pipeline()
        pipe.incr(key)
        pipe.expire(key, _window())
        count, _ = pipe.execute()
    except redis.RedisError:
        log.warning("sign-in throttle: Redis unavailable, failure not counted")
        return 0
    if count >= _limit():
        log.warning("sign-in throttle: locked a username from %s after %d failures", ip, count)
    return int(count)


def signin_failures_clear(*, username: str, ip: str) -> None:
    with contextlib.suppress(redis.RedisError):
        sync_client().delete(_key(username, ip))


class ThrottledModelBackend(ModelBackend):
    """ModelBackend that refuses a locked username+IP and counts failures."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(self._username_field())
        if username is None or password is None:
            return None
        ip = client_ip(request)
        if signin_locked(username=str(username), ip=ip):
            # PermissionDenied stops every backend: authenticate() returns None.
            raise PermissionDenied("Too many failed sign-ins; try again in 15 minutes.")
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            signin_failure_record(username=str(username), ip=ip)
        else:
            signin_failures_clear(username=str(username), ip=ip)
        return user

    @staticmethod
    def _username_field() -> str:
        from django.contrib.auth import get_user_model

        return get_user_model().USERNAME_FIELD
