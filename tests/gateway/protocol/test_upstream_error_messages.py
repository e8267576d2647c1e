"""Upstream error bodies of every shape real servers send, read into one message that is
safe to show the caller."""

import orjson
import pytest

from apps.gateway.protocol.openai import (
    MAX_UPSTREAM_MESSAGE,
    normalise_upstream_error,
    scrub_upstream_text,
)


def message_of(raw: bytes, status: int = 400, **kwargs) -> str:
    return normalise_upstream_error(raw, status, **kwargs)["error"]["message"]


@pytest.mark.parametrize(
    "body,message",
    [
        ({"error": {"message": "bad role", "type": "invalid_request_error"}}, "bad role"),
        ({"object": "error", "message": "too long", "type": "BadRequestError"}, "too long"),
        (
            {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}},
            "no",
        ),
        ({"error": "model 'x' not found"}, "model 'x' not found"),
        ({"detail": "Not Found"}, "Not Found"),
        (
            {"detail": [{"loc": ["body", "n"], "msg": "must be > 0", "input": "secret input"}]},
            "body.n: must be > 0",
        ),
        ({"error": {"detail": [{"loc": ["query"], "msg": "bad"}, "plain"]}}, "query: bad; plain"),
    ],
)
def test_each_json_shape_yields_its_message(body, message):
    assert message_of(orjson.dumps(body)) == message


def test_a_fastapi_detail_leaves_the_echoed_input_out():
    raw = orjson.dumps({"detail": [{"loc": ["body"], "msg": "bad", "input": "PRIVATE"}]})
    assert "PRIVATE" not in message_of(raw)


def test_a_text_body_is_the_message():
    assert message_of(b"Requested tokens exceed context window", 500) == (
        "Requested tokens exceed context window"
    )


def test_an_html_error_page_is_its_title():
    raw = b"<html><head><title>502 Bad Gateway</title></head><body><hr>nginx</body></html>"
    assert message_of(raw, 502) == "502 Bad Gateway"


def test_a_traceback_is_its_last_line():
    raw = b'Traceback (most recent call last):\n  File "/srv/app.py", line 9\nValueError: bad n'
    assert message_of(raw, 500) == "ValueError: bad n"


def test_an_empty_body_names_the_status():
    assert message_of(b"", 503) == "upstream returned HTTP 503"


def test_a_fastapi_detail_is_an_invalid_request():
    raw = orjson.dumps({"detail": [{"loc": ["body"], "msg": "bad"}]})
    assert normalise_upstream_error(raw, 422)["error"]["type"] == "invalid_request_error"


def test_an_integer_code_becomes_a_string():
    raw = orjson.dumps({"error": {"message": "m", "code": 400}})
    assert normalise_upstream_error(raw, 400)["error"]["code"] == "400"


@pytest.mark.parametrize(
    "text,gone",
    [
        ("rejected key upstream-s3cret-value", "upstream-s3cret-value"),
        ("header was Bearer abc.def.ghi", "abc.def.ghi"),
        ("x-api-key: hunter22", "hunter22"),
        ('{"api_key": "letmein99"}', "letmein99"),
        ("key tg-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-abcd", "tg-AbCd"),
        ("key sk-proj-1234567890abcdef", "sk-proj"),
        ("aws AKIAABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOP"),
        ("token 9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddcc", "9f8e7d6c5b4a"),
        ("POST https://vllm.example.com/v1/chat failed", "vllm.example.com"),
        ("connect redis://user:pw@cache:6379/0 refused", "pw@cache"),
        ("at 10.2.3.4:8000", "10.2.3.4"),
        ("at [fd00::17]:8000", "fd00::17"),
        ("pod vllm-0.inference.svc.cluster.local down", "vllm-0"),
        ("worker gpu-node-7:8000 timed out", "gpu-node-7"),
        ("from the backend host inference.acme.io:443", "inference.acme.io"),
    ],
)
def test_secrets_and_internal_addresses_are_removed(text, gone):
    scrubbed = scrub_upstream_text(
        text, secrets=["upstream-s3cret-value"], hosts=["inference.acme.io"]
    )
    assert gone not in scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens must be at most 4096",
        "messages.0.content: Field required",
        "The model `meta-llama/Llama-3.1-8B-Instruct` does not exist.",
        "This model's maximum context length is 8192 tokens (at 12:30:45).",
    ],
)
def test_ordinary_messages_pass_unchanged(text):
    assert scrub_upstream_text(text) == text


def test_a_message_is_bounded():
    assert len(scrub_upstream_text("word " * 5000)) == MAX_UPSTREAM_MESSAGE


def test_a_message_is_one_line():
    assert scrub_upstream_text("first\nsecond\x00third") == "first second third"


def test_a_secret_cut_by_the_input_bound_is_not_shown_in_part():
    text = "x " * 3999 + "y" + "sk-" + "z" * 40
    assert "zzz" not in scrub_upstream_text(text + " " + "w " * 10)
