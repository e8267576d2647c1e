"""Tool-call arguments repaired into a JSON object on the Anthropic surface.

Streams are checked with the anthropic SDK's own accumulator, which parses the joined
``partial_json`` after every delta (a prefix that is not JSON raises there)."""

import orjson
import pytest

from apps.gateway.protocol.anthropic_to_openai import (
    ToolNameMap,
    chat_response_to_message,
    finish_reason_to_stop_reason,
)
from apps.gateway.protocol.tool_arguments import ToolArgumentsStream, parse_tool_arguments
from tests.gateway.protocol.test_translation_traps import chunk, run, sdk_message

# (fragments as the model sent them, the input the client must get)
CASES = {
    "raw newline in a string": (
        ['{"text": "line one', '\nline two"}'],
        {"text": "line one\nline two"},
    ),
    "raw tab and a control character": (
        ['{"a": "x\ty\x01"}'],
        {"a": "x\ty\x01"},
    ),
    "cut inside a string": (['{"city": "Osl'], {"city": "Osl"}),
    "cut inside an array": (['{"days": [1, ', "2"], {"days": [1, 2]}),
    "cut after a comma": (['{"a": 1,'], {"a": 1}),
    "cut after a key": (['{"a": 1, "b"'], {"a": 1, "b": None}),
    "cut after a colon": (['{"a": 1, "b":'], {"a": 1, "b": None}),
    "cut inside a literal": (['{"ok": tr'], {"ok": True}),
    "cut inside a number": (['{"n": 1.'], {"n": 1.0}),
    "cut in nested objects": (['{"a": {"b": {"c": "d'], {"a": {"b": {"c": "d"}}}),
    "cut inside an escape": (['{"a": "x\\u00e9\\u00'], {"a": "xé"}),
    "invalid escape": (['{"a": "C:\\dir"}'], {"a": "C:\\dir"}),
    "trailing comma": (['{"a": [1, 2,], "b": 3,}'], {"a": [1, 2], "b": 3}),
    "text after the object": (['{"a": 1} and more'], {"a": 1}),
    "one character at a time": (
        list('{"text": "a\nb", "n": [true, null, -2.5e3]}'),
        {"text": "a\nb", "n": [True, None, -2500.0]},
    ),
    "not JSON at all": (["city=", "Oslo"], {"_raw_arguments": "city=Oslo"}),
    "a JSON array": (["[1, 2]"], {"_raw_arguments": "[1, 2]"}),
    "breaks the grammar half-way": (
        ['{"a": 1, ', "'b': 2}"],
        {"a": 1, "_raw_arguments": "{\"a\": 1, 'b': 2}"},
    ),
    "a broken literal": (['{"a": tx}'], {"a": None, "_raw_arguments": '{"a": tx}'}),
    "valid JSON": (['{"city": ', '"Oslo"}'], {"city": "Oslo"}),
}


def tool_stream(fragments: list[str], finish: str = "tool_calls") -> list[dict]:
    first = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}}
    return [
        chunk({"role": "assistant", "tool_calls": [first]}),
        *(chunk({"tool_calls": [{"index": 0, "function": {"arguments": f}}]}) for f in fragments),
        chunk(finish=finish),
    ]


@pytest.mark.parametrize(("fragments", "expected"), CASES.values(), ids=CASES.keys())
def test_streamed_arguments_reach_the_sdk_as_the_object(fragments, expected):
    snap = sdk_message(run(tool_stream(fragments)))
    assert snap.content[0].input == expected


@pytest.mark.parametrize(("fragments", "expected"), CASES.values(), ids=CASES.keys())
def test_streamed_arguments_join_into_one_json_object(fragments, expected):
    events = run(tool_stream(fragments))
    joined = "".join(
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    )
    assert orjson.loads(joined) == expected


@pytest.mark.parametrize(("fragments", "expected"), CASES.values(), ids=CASES.keys())
def test_every_piece_sent_keeps_a_json_prefix(fragments, expected):
    from jiter import from_json

    repair, sent = ToolArgumentsStream(), ""
    for fragment in fragments:
        sent += repair.feed(fragment)
        from_json(sent.encode(), partial_mode=True)  # raises on a non-prefix


@pytest.mark.parametrize(
    ("fragments", "expected"),
    [c for k, c in CASES.items() if k not in ("breaks the grammar half-way", "a broken literal")],
    ids=[k for k in CASES if k not in ("breaks the grammar half-way", "a broken literal")],
)
def test_non_stream_arguments_become_the_same_object(fragments, expected):
    assert parse_tool_arguments("".join(fragments)) == expected


def test_non_stream_arguments_in_python_style_are_repaired_by_the_library():
    assert parse_tool_arguments("{'city': 'Oslo', 'ok': True}") == {"city": "Oslo", "ok": True}


def test_non_stream_arguments_that_cannot_be_repaired_are_the_raw_text():
    assert parse_tool_arguments("city=Oslo") == {"_raw_arguments": "city=Oslo"}


def test_repair_says_when_it_changed_the_text():
    repair = ToolArgumentsStream()
    repair.feed('{"a": "x\ny"}')
    assert repair.repaired


def test_valid_arguments_pass_unchanged():
    repair = ToolArgumentsStream()
    text = '{"a": "x", "b": [1, {"c": null}]}'
    assert repair.feed(text) + repair.finish() == text


def test_nothing_is_sent_for_arguments_that_never_came():
    repair = ToolArgumentsStream()
    assert repair.feed("  ") + repair.finish() == ""


def test_stream_tool_call_cut_by_length_stops_for_max_tokens():
    snap = sdk_message(run(tool_stream(['{"city": "Osl'], finish="length")))
    assert snap.stop_reason == "max_tokens"


def test_response_tool_call_cut_by_length_stops_for_max_tokens():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": "b'}}
    resp = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            }
        ],
    }
    msg = chat_response_to_message(resp, model="m", names=ToolNameMap())
    assert msg["stop_reason"] == "max_tokens"


def test_finished_tool_call_stops_for_tool_use():
    assert finish_reason_to_stop_reason("tool_calls", saw_tool_use=True) == ("tool_use", None)
