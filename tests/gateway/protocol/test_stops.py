"""Stop sequences matched by the gateway (servers that do not say which one ended the
answer): the matcher alone, then through both translations with the SDK as the oracle."""

import pytest

from apps.gateway.protocol.anthropic_to_openai import ToolNameMap, chat_response_to_message
from apps.gateway.protocol.openai import data_chunk
from apps.gateway.protocol.stops import StopMatcher, find_stop
from tests.gateway.protocol.test_translation_traps import chunk, message_delta, run, sdk_message


def fed(matcher: StopMatcher, pieces: list[str]) -> str:
    return "".join(matcher.feed(p) for p in pieces)


def test_text_before_a_stop_string_split_across_pieces_is_returned():
    matcher = StopMatcher(["END"])
    assert fed(matcher, ["one E", "N", "D two"]) == "one "


def test_stop_string_split_across_pieces_is_matched():
    matcher = StopMatcher(["END"])
    fed(matcher, ["one E", "N", "D two"])
    assert matcher.matched == "END"


def test_a_possible_start_of_a_stop_string_is_held_back():
    matcher = StopMatcher(["END"])
    assert matcher.feed("one EN") == "one "


def test_held_back_text_is_released_when_it_turns_out_not_to_stop():
    matcher = StopMatcher(["END"])
    assert fed(matcher, ["one EN", "TRY"]) == "one ENTRY"


def test_no_more_is_held_back_than_the_longest_stop_string_minus_one():
    matcher = StopMatcher(["abcd", "xy"])
    assert matcher.feed("abcabc") == "abc"  # the last "abc" may still become "abcd"


def test_text_that_cannot_start_a_stop_string_is_not_held_back():
    matcher = StopMatcher(["END"])
    assert matcher.feed("one two") == "one two"


def test_flush_returns_what_was_held_back():
    matcher = StopMatcher(["END"])
    matcher.feed("one EN")
    assert matcher.flush() == "EN"


def test_nothing_after_a_match_is_returned():
    matcher = StopMatcher(["END"])
    fed(matcher, ["oneEND", "two"])
    assert matcher.feed("three") == ""


def test_withheld_characters_are_counted():
    matcher = StopMatcher(["END"])
    fed(matcher, ["oneENDx", "two"])
    assert matcher.cut_chars == len("ENDx") + len("two")


def test_the_stop_string_that_completes_first_wins():
    assert find_stop("abcd", ["bcd", "c"]) == (2, "c")


def test_of_two_stop_strings_ending_together_the_longer_wins():
    assert find_stop("abcd", ["cd", "bcd"]) == (1, "bcd")


def test_empty_stop_strings_match_nothing():
    assert find_stop("abc", ["", "zz"]) is None


def test_a_matcher_without_stop_strings_is_false():
    assert not StopMatcher(["", ""])


# -- through the translation -------------------------------------------------------


def llama_response(text: str, **message_extra) -> dict:
    """A chat completion as llama.cpp ends it: "stop", no word of which string."""
    return {
        "id": "chatcmpl-1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": text, **message_extra},
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9},
    }


def translated(resp: dict, stops: list[str]) -> dict:
    return chat_response_to_message(
        resp, model="m", names=ToolNameMap(), stop_sequences=stops, match_stop_sequences=True
    )


def test_response_cut_at_a_stop_sequence_reports_it():
    msg = translated(llama_response("Hello ### more"), ["###"])
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("stop_sequence", "###")


def test_response_cut_at_a_stop_sequence_keeps_the_text_before_it():
    msg = translated(llama_response("Hello ### more"), ["###"])
    assert msg["content"] == [{"type": "text", "text": "Hello "}]


def test_tool_calls_after_a_matched_stop_sequence_are_not_part_of_the_answer():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    msg = translated(llama_response("Hello ### more", tool_calls=[call]), ["###"])
    assert [b["type"] for b in msg["content"]] == ["text"]


def test_response_without_a_stop_sequence_ends_its_turn():
    msg = translated(llama_response("Hello"), ["###"])
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("end_turn", None)


def test_response_is_not_matched_when_the_backend_reports_stops_itself():
    resp = llama_response("Hello ### more")
    msg = chat_response_to_message(resp, model="m", names=ToolNameMap(), stop_sequences=["###"])
    assert msg["content"][0]["text"] == "Hello ### more"


def text_chunks(*pieces: str) -> list[dict]:
    return [chunk({"role": "assistant", "content": ""})] + [chunk({"content": p}) for p in pieces]


def stream_message(chunks: list[dict], stops: list[str]):
    return sdk_message(run(chunks, stop_sequences=stops, match_stop_sequences=True))


@pytest.mark.parametrize(
    "pieces",
    [("Hello #", "## more"), ("Hello ###", " more"), ("Hel", "lo ", "#", "#", "# more")],
)
def test_stream_cut_at_a_stop_sequence_reports_it(pieces):
    snap = stream_message(text_chunks(*pieces, "x") + [chunk(finish="stop")], ["###"])
    assert (snap.stop_reason, snap.stop_sequence) == ("stop_sequence", "###")


@pytest.mark.parametrize(
    "pieces",
    [("Hello #", "## more"), ("Hello ###", " more"), ("Hel", "lo ", "#", "#", "# more")],
)
def test_stream_cut_at_a_stop_sequence_keeps_the_text_before_it(pieces):
    snap = stream_message(text_chunks(*pieces, "x") + [chunk(finish="stop")], ["###"])
    assert snap.content[0].text == "Hello "


def test_stream_ignores_what_the_upstream_sends_after_the_match():
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}
    chunks = text_chunks("Hi ###", " more") + [chunk({"tool_calls": [call]})]
    snap = stream_message(chunks, ["###"])
    assert [b.type for b in snap.content] == ["text"]


def test_stream_says_it_stopped_on_a_sequence_so_the_driver_stops_reading():
    from apps.gateway.protocol.anthropic_to_openai import ChatStreamToMessagesStream

    conv = ChatStreamToMessagesStream(
        "m", ToolNameMap(), "msg_1", 5, stop_sequences=["###"], match_stop_sequences=True
    )
    for c in text_chunks("Hi ###"):
        conv.feed(data_chunk(c))
    assert conv.stopped_on_sequence


def test_stream_releases_held_back_text_at_the_end():
    snap = stream_message(text_chunks("Hello #") + [chunk(finish="stop")], ["###"])
    assert snap.content[0].text == "Hello #"


def test_stream_without_a_stop_sequence_ends_its_turn():
    snap = stream_message(text_chunks("Hello #") + [chunk(finish="stop")], ["###"])
    assert (snap.stop_reason, snap.stop_sequence) == ("end_turn", None)


def test_stream_counts_the_cut_text_as_generated_when_no_usage_comes():
    events = run(text_chunks("abcd###", "efgh"), stop_sequences=["###"], match_stop_sequences=True)
    assert message_delta(events)["usage"]["output_tokens"] == 2  # ceil(len("abcd###") / 4)
