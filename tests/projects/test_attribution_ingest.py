"""Ingest stores a usage event's project, end user and tags (the COPY path's columns in
step with its rows); an event carrying bad ones (the spool, an older gateway) still lands,
without them."""

import pytest
from django.conf import settings as django_settings

from apps.keys.services import api_key_issue
from apps.ledger.events import UsageEvent
from apps.ledger.models import UsageRecord
from apps.ledger.services import usage_ingest
from apps.tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stream(clean_stream):
    return clean_stream


@pytest.fixture
def key():
    return api_key_issue(tenant=Tenant.objects.create(name="ingested"), name="k")[0]


def land(stream, key, request_id: str, **fields) -> UsageRecord:
    event = UsageEvent(
        request_id=request_id,
        tenant_id=key.tenant_id,
        api_key_id=key.id,
        model="m",
        protocol="openai",
        endpoint="chat.completions",
        stream=False,
        created_at=1_790_000_000.0,
        status=200,
        cost="0",
        price="0",
        **fields,
    )
    stream.xadd(django_settings.LEDGER_STREAM, {"e": event.to_bytes()})
    usage_ingest(consumer="attribution")
    return UsageRecord.objects.get(request_id=request_id)


def test_the_project_lands(stream, key):
    assert land(stream, key, "r-project", project_id=key.project_id).project_id == key.project_id


def test_the_end_user_lands(stream, key):
    assert land(stream, key, "r-user", end_user="alice").end_user == "alice"


def test_the_tags_land(stream, key):
    record = land(stream, key, "r-tags", tags={"team": "web", "env": "prod"})
    assert record.tags == {"team": "web", "env": "prod"}


def test_the_columns_after_the_attribution_still_land_in_place(stream, key):
    record = land(stream, key, "r-after", tags={"team": "web"}, latency_ms=123, ttft_ms=45)
    assert (record.latency_ms, record.ttft_ms) == (123, 45)


def test_an_event_with_a_hostile_tag_lands_without_its_tags(stream, key):
    assert land(stream, key, "r-bad-tag", tags={"team": "=cmd|' /C calc'!A0"}).tags is None


def test_an_event_with_a_nul_end_user_lands_without_it(stream, key):
    assert land(stream, key, "r-bad-user", end_user="a\x00b").end_user == ""


def test_an_event_with_a_10_kb_end_user_lands_without_it(stream, key):
    assert land(stream, key, "r-long-user", end_user="x" * 10_240).end_user == ""


def test_an_event_with_a_project_that_is_not_an_id_lands_without_it(stream, key):
    assert land(stream, key, "r-bad-project", project_id="1; DROP").project_id is None
