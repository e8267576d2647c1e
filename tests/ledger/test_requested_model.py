"""The ledger keeps the model asked for beside the model that served (a fallback), on
both ingest paths, and always filled."""

from dataclasses import replace

import orjson
import pytest
from django.conf import settings

from apps.keys.models import ApiKey
from apps.ledger.models import UsageRecord
from apps.ledger.services import usage_ingest
from tests.ledger.test_ingest import append, event_for


def fallback_event(key: ApiKey):
    """A request for "primary" that "backup" served."""
    return replace(event_for(key, "req_fb", requested_model="primary"), model="backup")


def test_an_event_served_by_a_fallback_lands_with_the_model_asked_for(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    append(
        clean_stream,
        fallback_event(key),
    )
    usage_ingest(consumer="t")
    assert UsageRecord.objects.get(request_id="req_fb").requested_model == "primary"


def test_an_event_served_by_a_fallback_lands_with_the_model_that_served(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    append(
        clean_stream,
        fallback_event(key),
    )
    usage_ingest(consumer="t")
    assert UsageRecord.objects.get(request_id="req_fb").model == "backup"


def test_an_event_without_a_requested_model_stores_its_model(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    raw = orjson.loads(event_for(key, "req_old").to_bytes())
    del raw["requested_model"]  # as an older gateway wrote it
    clean_stream.xadd(settings.LEDGER_STREAM, {"e": orjson.dumps(raw)})
    usage_ingest(consumer="t")
    assert UsageRecord.objects.get(request_id="req_old").requested_model == "test-model"


def test_the_one_by_one_path_keeps_the_requested_model(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    # A key deleted before its usage landed fails the batch's single insert: the rest
    # land one by one.
    append(clean_stream, replace(event_for(key, "req_orphan"), api_key_id=10**9))
    append(
        clean_stream,
        fallback_event(key),
    )
    usage_ingest(consumer="t")
    assert UsageRecord.objects.get(request_id="req_fb").requested_model == "primary"


@pytest.mark.parametrize("value", ["a\x00b", 42, None], ids=["nul", "int", "null"])
def test_a_hostile_requested_model_goes_to_the_dead_letters(seed, clean_stream, value):
    key = ApiKey.objects.get(name="main")
    raw = orjson.loads(event_for(key, "req_hostile").to_bytes())
    raw["requested_model"] = value
    clean_stream.xadd(settings.LEDGER_STREAM, {"e": orjson.dumps(raw)})
    usage_ingest(consumer="t")
    assert clean_stream.xlen(settings.LEDGER_STREAM + ":dead") == 1
