"""End users and tags read off a request (apps/gateway/protocol/attribution.py): bounded,
without control characters, never a spreadsheet formula; the header wins over the body."""

import pytest

from apps.gateway.protocol.attribution import (
    MAX_END_USER,
    AttributionInvalid,
    anthropic_end_user,
    end_user_hash,
    openai_end_user,
    request_tags,
    tags_merge,
    tags_parse,
    tags_validate,
    take_metadata_tags,
)


def refused(call) -> AttributionInvalid:
    with pytest.raises(AttributionInvalid) as caught:
        call()
    return caught.value


def test_the_body_user_is_the_end_user():
    assert openai_end_user({"user": "alice"}, None) == "alice"


def test_the_header_wins_over_the_body_user():
    assert openai_end_user({"user": "alice"}, b"bob") == "bob"


def test_no_user_is_no_end_user():
    assert openai_end_user({"model": "m"}, None) is None


def test_anthropic_metadata_user_id_is_the_end_user():
    assert anthropic_end_user({"metadata": {"user_id": "u-1"}}, None) == "u-1"


def test_the_header_wins_over_anthropic_metadata():
    assert anthropic_end_user({"metadata": {"user_id": "u-1"}}, b"u-2") == "u-2"


def test_a_user_of_the_maximum_length_is_taken():
    assert openai_end_user({"user": "x" * MAX_END_USER}, None) == "x" * MAX_END_USER


def test_a_10_kb_user_is_refused_naming_user():
    assert refused(lambda: openai_end_user({"user": "x" * 10_240}, None)).param == "user"


@pytest.mark.parametrize("text", ["a\x00b", "a\nb", "a\rb", "\x1b[31m", "a\x7fb", "a\u2028b"])
def test_control_characters_in_a_user_are_refused(text):
    assert refused(lambda: openai_end_user({"user": text}, None)).param == "user"


def test_control_characters_in_the_header_are_refused_naming_it():
    assert refused(lambda: openai_end_user({}, b"a\x01b")).param == "x-tollgate-end-user"


def test_a_header_that_is_not_utf8_is_refused():
    assert refused(lambda: openai_end_user({}, b"\xff\xfe")).param == "x-tollgate-end-user"


def test_a_numeric_anthropic_user_id_is_refused_naming_it():
    assert refused(lambda: anthropic_end_user({"metadata": {"user_id": 5}}, None)).param == (
        "metadata.user_id"
    )


def test_an_empty_user_is_refused():
    assert refused(lambda: openai_end_user({"user": ""}, None)).param == "user"


def test_end_users_of_two_tenants_never_share_counters():
    assert end_user_hash(1, "alice") != end_user_hash(2, "alice")


def test_the_end_user_hash_does_not_contain_the_id():
    assert "alice" not in end_user_hash(1, "alice")


def test_tags_are_parsed_from_the_header():
    assert tags_parse(b"team:web, env:prod") == {"team": "web", "env": "prod"}


def test_a_tag_value_may_hold_colons_and_slashes():
    assert tags_parse(b"route:/v1/chat:fast") == {"route": "/v1/chat:fast"}


@pytest.mark.parametrize(
    "header",
    [
        b"=cmd|' /C calc'!A0:x",
        b"team:=cmd|' /C calc'!A0",
        b"team:+1",
        b"@team:x",
        b"team:a b",
        b"team:a\x00b",
        b"team:\xc3\xa9",
        b"team",
        b"team:",
        b":web",
        b"team:web,team:api",
    ],
)
def test_hostile_or_malformed_tags_are_refused(header):
    assert refused(lambda: tags_parse(header)).param == "x-tollgate-tags"


def test_eleven_tags_are_refused():
    header = ",".join(f"k{n}:v" for n in range(11)).encode()
    assert "at most 10" in refused(lambda: tags_parse(header)).message


def test_a_10_kb_tags_header_is_refused():
    assert refused(lambda: tags_parse(b"team:" + b"x" * 10_240)).param == "x-tollgate-tags"


def test_a_tag_value_longer_than_128_is_refused():
    assert refused(lambda: tags_parse(b"team:" + b"x" * 129)).param == "x-tollgate-tags"


def test_request_tags_override_the_keys_defaults():
    assert tags_merge({"team": "web", "env": "prod"}, {"team": "api"}) == {
        "team": "api",
        "env": "prod",
    }


def test_merged_tags_are_at_most_ten():
    defaults = {f"d{n}": "v" for n in range(6)}
    sent = {f"s{n}": "v" for n in range(5)}
    assert refused(lambda: tags_merge(defaults, sent)).param == "x-tollgate-tags"


def test_stored_tags_name_the_offending_key():
    assert refused(lambda: tags_validate({"team": "=1+1"})).param == "default_tags.team"


# Tags from a body's metadata object --------------------------------------------------------


def test_chat_metadata_without_store_is_taken_as_tags():
    body = {"metadata": {"team": "web"}}
    assert take_metadata_tags(body, "unstored") == {"team": "web"}


def test_chat_metadata_without_store_is_taken_off_the_body():
    body = {"metadata": {"team": "web"}}
    take_metadata_tags(body, "unstored")
    assert "metadata" not in body


def test_chat_metadata_with_store_stays_and_is_no_tags():
    body = {"store": True, "metadata": {"purpose": "eval run"}}
    assert (take_metadata_tags(body, "unstored"), body["metadata"]) == ({}, {"purpose": "eval run"})


def test_responses_metadata_is_never_tags():
    body = {"metadata": {"team": "web"}}
    assert (take_metadata_tags(body, "never"), body["metadata"]) == ({}, {"team": "web"})


def test_anthropic_metadata_keeps_user_id_and_gives_the_rest_as_tags():
    body = {"metadata": {"user_id": "u-1", "team": "web"}}
    assert (take_metadata_tags(body, "user_id"), body["metadata"]) == (
        {"team": "web"},
        {"user_id": "u-1"},
    )


def test_anthropic_metadata_with_only_user_id_is_left_alone():
    body = {"metadata": {"user_id": "u-1"}}
    assert (take_metadata_tags(body, "user_id"), body["metadata"]) == ({}, {"user_id": "u-1"})


def test_anthropic_metadata_with_user_id_and_ten_tags_is_taken():
    tags = {f"k{n}": "v" for n in range(10)}
    assert take_metadata_tags({"metadata": {"user_id": "u", **tags}}, "user_id") == tags


def test_null_metadata_is_no_tags():
    assert take_metadata_tags({"metadata": None}, "always") == {}


@pytest.mark.parametrize(
    ("metadata", "param"),
    [
        ({"team": "=cmd|' /C calc'!A0"}, "metadata.team"),
        ({"team": 5}, "metadata.team"),
        ({"team": "x" * 10_240}, "metadata.team"),
        ({"=HYPERLINK(": "v"}, "metadata"),
        ({"k" * 65: "v"}, "metadata"),
        ({f"k{n}": "v" for n in range(11)}, "metadata"),
        ([["team", "web"]], "metadata"),
    ],
)
def test_hostile_metadata_is_refused_naming_the_field(metadata, param):
    assert refused(lambda: take_metadata_tags({"metadata": metadata}, "always")).param == param


def test_the_header_wins_over_metadata():
    assert request_tags({"env": "prod", "team": "web"}, {"env": "dev"}) == {
        "env": "dev",
        "team": "web",
    }


def test_metadata_and_header_tags_beyond_ten_are_refused():
    body = {f"b{n}": "v" for n in range(6)}
    header = {f"h{n}": "v" for n in range(5)}
    assert refused(lambda: request_tags(body, header)).param == "metadata"
