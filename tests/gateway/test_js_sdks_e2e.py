"""The official JavaScript SDKs (tests/js, pinned, installed by ``make test`` when npm is
there) parse Tollgate's answers, priced ones included: each shows ``usage.cost`` equal to
the ledger record's price. Skipped where Node or the packages are missing."""

import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import usage_record

JS = Path(__file__).resolve().parents[1] / "js"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS / "node_modules" / "openai").is_dir(),
    reason="Node.js or the JS SDKs (npm ci --prefix tests/js) are not installed",
)


@pytest.fixture
def parsed(gateway, seed, upstream, celery_worker) -> dict:
    run = subprocess.run(
        ["node", str(JS / "costs.mjs"), gateway, seed.secret],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_the_openai_sdk_shows_a_chat_price_equal_to_the_ledger(parsed):
    assert Decimal(parsed["chat"]["cost"]) == usage_record(parsed["chat"]["id"]).price


def test_the_openai_sdk_sees_the_cost_header(parsed):
    assert parsed["chat"]["header"] == parsed["chat"]["cost"]


def test_the_openai_sdk_shows_a_stream_price_equal_to_the_ledger(parsed):
    stream = parsed["chat_stream"]
    assert Decimal(stream["cost"]) == usage_record(stream["id"]).price


def test_the_openai_sdk_still_reads_the_stream_text(parsed):
    assert parsed["chat_stream"]["text"] == "w0 w1 w2 w3"


def test_the_anthropic_sdk_shows_a_message_price_equal_to_the_ledger(parsed):
    message = parsed["messages"]
    assert Decimal(message["cost"]) == usage_record(message["id"]).price


def test_the_anthropic_sdk_shows_a_stream_price_equal_to_the_ledger(parsed):
    stream = parsed["messages_stream"]
    assert Decimal(stream["cost"]) == usage_record(stream["id"]).price


def test_the_anthropic_sdk_still_builds_the_final_message(parsed):
    assert parsed["messages_stream"]["text"] == "w0 w1 w2"
