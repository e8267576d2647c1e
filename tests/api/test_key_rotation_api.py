"""POST /api/v1/keys/<id>/rotate: the same key with a new secret, shown once; an optional
``grace_seconds`` keeps the old secret working (0 by default, at most 7 days)."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.audit.models import AuditEvent
from apps.keys.hashing import secret_hash
from apps.keys.models import ApiKey
from apps.keys.selectors import api_key_get_by_hash
from tests.api.api_support import token_client

SEVEN_DAYS = 7 * 24 * 3600


def rotate(org, body=None, key_id=None):
    client = token_client(org.acme_token)
    url = f"/api/v1/keys/{key_id or org.acme_key.id}/rotate"
    if body is None:
        return client.post(url)
    return client.post(url, data=json.dumps(body), content_type="application/json")


def test_rotating_answers_201_with_the_new_secret(org):
    assert rotate(org, {"grace_seconds": 3600}).status_code == 201


def test_rotating_keeps_the_key_id(org):
    assert rotate(org, {"grace_seconds": 3600}).json()["id"] == org.acme_key.id


def test_rotating_shows_the_new_secret_once(org):
    secret = rotate(org, {"grace_seconds": 3600}).json()["secret"]
    assert ApiKey.objects.get(pk=org.acme_key.pk).key_hash == secret_hash(secret)


def test_the_rotation_answer_is_never_cached(org):
    assert rotate(org)["Cache-Control"] == "no-store"


def test_the_key_never_shows_the_new_secret_again(org):
    secret = rotate(org).json()["secret"]
    detail = token_client(org.acme_token).get(f"/api/v1/keys/{org.acme_key.id}")
    assert secret not in detail.content.decode()


def test_the_answer_says_when_the_old_secret_stops_working(org):
    before = timezone.now()
    until = parse_datetime(
        rotate(org, {"grace_seconds": 3600}).json()["previous_secret_valid_until"]
    )
    assert before + timedelta(hours=1) <= until <= timezone.now() + timedelta(hours=1)


def test_the_answer_names_the_old_secrets_prefix(org):
    old_prefix = org.acme_key.prefix
    assert rotate(org, {"grace_seconds": 3600}).json()["previous_prefix"] == old_prefix


def test_the_keys_detail_shows_the_grace_too(org):
    answer = rotate(org, {"grace_seconds": 3600}).json()
    detail = token_client(org.acme_token).get(f"/api/v1/keys/{org.acme_key.id}").json()
    assert detail["previous_secret_valid_until"] == answer["previous_secret_valid_until"]


def test_without_a_body_the_old_secret_is_refused_at_once(org):
    old_hash = org.acme_key.key_hash
    assert rotate(org).json()["previous_secret_valid_until"] is None
    assert api_key_get_by_hash(old_hash) is None


def test_a_zero_grace_refuses_the_old_secret_at_once(org):
    old_hash = org.acme_key.key_hash
    rotate(org, {"grace_seconds": 0})
    assert api_key_get_by_hash(old_hash) is None


def test_inside_the_grace_the_old_secret_finds_the_same_key(org):
    old_hash = org.acme_key.key_hash
    rotate(org, {"grace_seconds": 60})
    assert api_key_get_by_hash(old_hash).id == org.acme_key.id


def test_seven_days_is_accepted(org):
    assert rotate(org, {"grace_seconds": SEVEN_DAYS}).status_code == 201


@pytest.mark.parametrize(
    "grace", [-1, SEVEN_DAYS + 1, 2**63, 1.5, "60", "an hour", True, None, [60], {"s": 1}]
)
def test_a_bad_grace_is_a_400_naming_the_field(org, grace):
    response = rotate(org, {"grace_seconds": grace})
    assert (response.status_code, list(response.json())) == (400, ["grace_seconds"])


def test_a_bad_grace_leaves_the_secret_as_it_was(org):
    old_hash = org.acme_key.key_hash
    rotate(org, {"grace_seconds": -5})
    assert ApiKey.objects.get(pk=org.acme_key.pk).key_hash == old_hash


def test_an_unknown_field_is_a_400_naming_it(org):
    response = rotate(org, {"grace": 60})
    assert (response.status_code, list(response.json())) == (400, ["grace"])


@pytest.mark.parametrize("body", [[60], 60, "grace"])
def test_a_body_that_is_not_an_object_is_a_400(org, body):
    assert rotate(org, body).status_code == 400


def test_a_body_that_is_not_json_is_a_400(org):
    response = token_client(org.acme_token).post(
        f"/api/v1/keys/{org.acme_key.id}/rotate", data="{", content_type="application/json"
    )
    assert response.status_code == 400


def test_a_revoked_key_cannot_be_rotated(org):
    token_client(org.acme_token).post(f"/api/v1/keys/{org.acme_key.id}/revoke")
    response = rotate(org, {"grace_seconds": 60})
    assert (response.status_code, response.json()) == (
        400,
        {"detail": ["a revoked key cannot be rotated"]},
    )


def test_rotating_a_revoked_key_leaves_it_refused(org):
    token_client(org.acme_token).post(f"/api/v1/keys/{org.acme_key.id}/revoke")
    rotate(org, {"grace_seconds": 60})
    assert ApiKey.objects.get(pk=org.acme_key.pk).revoked_at is not None


def test_another_tenants_key_is_a_404(org):
    assert rotate(org, {"grace_seconds": 60}, key_id=org.globex_key.id).status_code == 404


def test_the_audit_log_records_the_grace(org):
    rotate(org, {"grace_seconds": 3600})
    event = AuditEvent.objects.get(tenant=org.acme, action="key.rotated")
    assert event.details["grace_seconds"] == 3600
