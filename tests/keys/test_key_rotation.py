"""Rotation keeps the key: a new secret for the same row, the old one accepted for the
grace chosen at rotation (0 = refused at once, at most 7 days), one previous secret at a
time, and every gateway process told which of its cached entries changed."""

import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.core.redis import KEYS_INVALIDATE_CHANNEL, sync_client
from apps.keys.hashing import secret_hash
from apps.keys.models import ApiKey
from apps.keys.selectors import api_key_get_by_hash
from apps.keys.services import (
    MAX_ROTATION_GRACE_SECONDS,
    ApiKeyError,
    api_key_issue,
    api_key_revoke,
    api_key_rotate,
    api_key_update,
)
from apps.tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def issued(redis_url) -> tuple[ApiKey, str]:
    tenant = Tenant.objects.create(name="acme")
    return api_key_issue(tenant=tenant, name="ci", allowed_models=["test-model"], rpm=7)


def found(secret: str) -> int | None:
    """The id of the key the gateway would load for this secret (None: unknown)."""
    api_key = api_key_get_by_hash(secret_hash(secret))
    return api_key.id if api_key else None


def end_grace(api_key: ApiKey) -> None:
    """As if the grace had run out (the clock cannot be moved for the database)."""
    ApiKey.objects.filter(pk=api_key.pk).update(
        previous_valid_until=timezone.now() - timedelta(milliseconds=1)
    )


@pytest.fixture
def invalidations(redis_url) -> Iterator[Callable[[set[str]], set[str]]]:
    """``invalidations(wanted)``: which of the ``wanted`` hashes were published as key-cache
    invalidations since the test started, read from Redis as a gateway process reads them
    (waits up to 10 s for all of them). Pub/sub channels span Redis databases, so other
    suites' messages may arrive too: only the wanted ones are told."""
    pubsub = sync_client().pubsub()
    pubsub.subscribe(KEYS_INVALIDATE_CHANNEL)
    pubsub.get_message(timeout=1.0)  # the subscription's confirmation
    received: set[str] = set()

    def read(wanted: set[str]) -> set[str]:
        deadline = time.monotonic() + 10
        while not wanted <= received and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message and message["type"] == "message":
                received.add(message["data"].decode())
        return received & wanted

    yield read
    pubsub.close()


def test_rotation_keeps_the_keys_id(issued):
    api_key, _secret = issued
    rotated, _new = api_key_rotate(api_key=api_key)
    assert rotated.id == ApiKey.objects.get(name="ci").id == api_key.id


def test_rotation_creates_no_other_key(issued):
    api_key, _secret = issued
    api_key_rotate(api_key=api_key)
    assert ApiKey.objects.count() == 1


def test_rotation_keeps_the_keys_settings(issued):
    api_key, _secret = issued
    api_key_rotate(api_key=api_key)
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert (stored.name, stored.allowed_models, stored.rpm) == ("ci", ["test-model"], 7)


def test_the_new_secret_finds_the_key(issued):
    api_key, _secret = issued
    _key, new = api_key_rotate(api_key=api_key)
    assert found(new) == api_key.id


def test_the_new_secret_shows_its_own_prefix(issued):
    api_key, secret = issued
    rotated, new = api_key_rotate(api_key=api_key)
    assert (rotated.prefix, ApiKey.objects.get(pk=api_key.pk).prefix) == (new[:10], new[:10])


def test_without_a_grace_the_old_secret_is_unknown_at_once(issued):
    api_key, secret = issued
    api_key_rotate(api_key=api_key)
    assert found(secret) is None


def test_without_a_grace_no_previous_secret_is_kept(issued):
    api_key, _secret = issued
    rotated, _new = api_key_rotate(api_key=api_key, grace_seconds=0)
    assert rotated.previous_secret_valid_until() is None


def test_inside_the_grace_the_old_secret_finds_the_same_key(issued):
    api_key, secret = issued
    api_key_rotate(api_key=api_key, grace_seconds=60)
    assert found(secret) == api_key.id


def test_the_grace_ends_grace_seconds_after_the_rotation(issued):
    api_key, _secret = issued
    before = timezone.now()
    rotated, _new = api_key_rotate(api_key=api_key, grace_seconds=3600)
    until = rotated.previous_secret_valid_until()
    assert before + timedelta(hours=1) <= until <= timezone.now() + timedelta(hours=1)


def test_after_the_grace_the_old_secret_is_unknown(issued):
    api_key, secret = issued
    api_key_rotate(api_key=api_key, grace_seconds=60)
    end_grace(api_key)
    assert found(secret) is None


def test_after_the_grace_the_new_secret_still_works(issued):
    api_key, _secret = issued
    _key, new = api_key_rotate(api_key=api_key, grace_seconds=60)
    end_grace(api_key)
    assert found(new) == api_key.id


def test_seven_days_is_the_longest_grace(issued):
    api_key, secret = issued
    api_key_rotate(api_key=api_key, grace_seconds=MAX_ROTATION_GRACE_SECONDS)
    assert found(secret) == api_key.id


@pytest.mark.parametrize(
    "grace", [-1, MAX_ROTATION_GRACE_SECONDS + 1, 10**30, 1.5, "60", True, None, [60]]
)
def test_a_bad_grace_is_refused_naming_the_field(issued, grace):
    api_key, _secret = issued
    with pytest.raises(ApiKeyError) as refused:
        api_key_rotate(api_key=api_key, grace_seconds=grace)
    assert refused.value.field == "grace_seconds"


def test_a_refused_rotation_keeps_the_old_secret(issued):
    api_key, secret = issued
    with pytest.raises(ApiKeyError):
        api_key_rotate(api_key=api_key, grace_seconds=-1)
    assert found(secret) == api_key.id


def test_a_second_rotation_inside_the_grace_ends_the_first_secret(issued):
    api_key, first = issued
    api_key, _second = api_key_rotate(api_key=api_key, grace_seconds=60)
    api_key_rotate(api_key=api_key, grace_seconds=60)
    assert found(first) is None


def test_a_second_rotation_inside_the_grace_keeps_the_second_secret_in_grace(issued):
    api_key, _first = issued
    api_key, second = api_key_rotate(api_key=api_key, grace_seconds=60)
    api_key_rotate(api_key=api_key, grace_seconds=60)
    assert found(second) == api_key.id


def test_a_second_rotation_without_grace_ends_both_old_secrets(issued):
    api_key, first = issued
    api_key, second = api_key_rotate(api_key=api_key, grace_seconds=60)
    api_key_rotate(api_key=api_key, grace_seconds=0)
    assert (found(first), found(second)) == (None, None)


def test_a_revoked_key_cannot_be_rotated(issued):
    api_key, _secret = issued
    api_key_revoke(api_key=api_key)
    with pytest.raises(ApiKeyError, match="revoked"):
        api_key_rotate(api_key=api_key, grace_seconds=60)


def test_a_revoked_key_gets_no_new_secret(issued):
    api_key, _secret = issued
    revoked_hash = api_key.key_hash
    api_key_revoke(api_key=api_key)
    with pytest.raises(ApiKeyError):
        api_key_rotate(api_key=api_key)
    assert ApiKey.objects.get(pk=api_key.pk).key_hash == revoked_hash


def test_rotation_tells_the_gateways_about_old_and_new_hashes(
    issued, invalidations, django_capture_on_commit_callbacks
):
    api_key, first = issued
    with django_capture_on_commit_callbacks(execute=True):
        api_key, second = api_key_rotate(api_key=api_key, grace_seconds=60)
    with django_capture_on_commit_callbacks(execute=True):
        api_key, third = api_key_rotate(api_key=api_key, grace_seconds=60)
    wanted = {secret_hash(s) for s in (first, second, third)}
    assert invalidations(wanted) == wanted


@pytest.mark.parametrize("change", ["revoke", "update"])
def test_a_change_inside_the_grace_reaches_both_secrets_entries(
    issued, invalidations, django_capture_on_commit_callbacks, change
):
    api_key, first = issued
    api_key, second = api_key_rotate(api_key=api_key, grace_seconds=60)
    with django_capture_on_commit_callbacks(execute=True):
        if change == "revoke":
            api_key_revoke(api_key=api_key)
        else:
            api_key_update(api_key=api_key, rpm=1)
    wanted = {secret_hash(first), secret_hash(second)}
    assert invalidations(wanted) == wanted


def test_a_key_cannot_keep_its_current_hash_as_its_previous_one(issued):
    api_key, _secret = issued
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=api_key.pk).update(
            previous_key_hash=api_key.key_hash, previous_valid_until=timezone.now()
        )


def test_two_keys_cannot_share_a_previous_hash(issued):
    api_key, _secret = issued
    api_key_rotate(api_key=api_key, grace_seconds=60)
    other, _ = api_key_issue(tenant=api_key.tenant, name="other")
    previous = ApiKey.objects.get(pk=api_key.pk).previous_key_hash
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=other.pk).update(
            previous_key_hash=previous, previous_valid_until=timezone.now()
        )
