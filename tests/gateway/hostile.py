"""A generated corpus of hostile request bodies for every /v1 route.

For each route, a valid base body that uses every field the gateway reads; then, for
every field path of it (nested ones included), one body per hostile JSON value put in
that place, and one without the field. Bodies are encoded with the standard library's
json (it writes integers beyond 64 bits and deep nesting, as a hostile client would).
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Path = tuple[str | int, ...]
MISSING = object()


def nested_list(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def nested_object(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


HOSTILE_VALUES: dict[str, Any] = {
    "null": None,
    "true": True,
    "false": False,
    "zero": 0,
    "minus_one": -1,
    "max_float": 1e308,
    "max_uint64": 2**64 - 1,
    "int_beyond_64_bits": 2**64,
    "negative_int_beyond_64_bits": -(2**63) - 1,
    "empty_string": "",
    "huge_string": "x" * 100_000,
    "empty_array": [],
    "array_of_junk": [None, 1, "x", {}],
    "nested_array_30": nested_list(30),
    "nested_array_200": nested_list(200),
    "empty_object": {},
    "nested_object_30": nested_object(30),
    "nested_object_200": nested_object(200),
    "missing": MISSING,
}

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": False,
    },
}
CHAT_MESSAGES = [
    {"role": "system", "content": "Be terse.", "name": "rules"},
    {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {
                "type": "image_url",
                "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "low"},
            },
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "12 degrees"},
    {"role": "assistant", "content": [{"type": "text", "text": "It is 12 degrees."}]},
    {"role": "user", "content": "Thanks, and tomorrow?"},
]
CHAT = {
    "model": "test-model",
    "messages": CHAT_MESSAGES,
    "tools": [TOOL],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": True,
    "stream": False,
    "max_tokens": 32,
    "max_completion_tokens": 32,
    "stop": ["\n\nHuman:"],
    "temperature": 0.5,
    "top_p": 0.9,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "n": 1,
    "seed": 7,
    "user": "user-1",
    "metadata": {"purpose": "tests"},
    "logprobs": False,
    "response_format": {"type": "text"},
    "logit_bias": {"50256": -100},
}
CHAT_STREAM = {
    "model": "test-model",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "stream_options": {"include_usage": True},
    "stop": "END",
    "tool_choice": "none",
}

ANTHROPIC_MESSAGES = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Describe", "cache_control": {"type": "ephemeral"}},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"},
            },
            {"type": "image", "source": {"type": "url", "url": "https://example.com/y.jpg"}},
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": "a doc"},
            },
        ],
    },
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "get_weather",
                "input": {"city": "Oslo"},
            },
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01",
                "content": [{"type": "text", "text": "12 degrees"}],
                "is_error": False,
            },
            {"type": "text", "text": "And tomorrow?"},
        ],
    },
]
ANTHROPIC_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
MESSAGES = {
    "model": "test-model",
    "max_tokens": 32,
    "messages": ANTHROPIC_MESSAGES,
    "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
    "stop_sequences": ["\n\nHuman:"],
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 5,
    "tools": [ANTHROPIC_TOOL],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "metadata": {"user_id": "user-1"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "stream": False,
}
MESSAGES_STREAM = {
    "model": "test-model",
    "max_tokens": 32,
    "messages": [{"role": "user", "content": "hi"}],
    "system": "Be terse.",
    "tool_choice": {"type": "tool", "name": "get_weather"},
    "tools": [ANTHROPIC_TOOL],
    "stream": True,
}
# (the blocks' validation is the Messages route's: the whole conversation is walked there)
COUNT_TOKENS = {
    "model": "test-model",
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Describe"}]},
        ANTHROPIC_MESSAGES[1],
        {"role": "user", "content": [ANTHROPIC_MESSAGES[2]["content"][0]]},
    ],
    "system": "Be terse.",
    "tools": [ANTHROPIC_TOOL],
    "tool_choice": {"type": "any"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
}
EMBEDDINGS = {
    "model": "test-model",
    "input": ["hello", "world"],
    "encoding_format": "float",
    "dimensions": 8,
    "user": "user-1",
}
EMBEDDINGS_TOKENS = {"model": "test-model", "input": [[1, 2, 3], [4, 5]]}
RESPONSES = {
    "model": "test-model",
    "instructions": "Be terse.",
    "input": [
        {"type": "message", "role": "developer", "content": "Answer in English."},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "https://example.com/y.jpg", "detail": "low"},
            ],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Checking."}],
        },
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Oslo"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "12 degrees"},
        {"role": "user", "content": "And tomorrow?"},
    ],
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": False,
        }
    ],
    "tool_choice": {"type": "function", "name": "get_weather"},
    "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}}},
    "reasoning": {"effort": "low"},
    "max_output_tokens": 32,
    "temperature": 0.5,
    "top_p": 0.9,
    "user": "user-1",
    "metadata": {"purpose": "tests"},
    "parallel_tool_calls": True,
    "store": False,
    "stream": False,
}
RESPONSES_STREAM = {
    "model": "test-model",
    "input": "hi",
    "stream": True,
    "text": {"format": {"type": "text"}},
}


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    protocol: str  # "openai" or "anthropic": the error shape the route answers in
    bases: tuple[dict, ...]
    models: tuple[str, ...]  # each base is sent for each model (a deployment kind each)


ROUTES = (
    Route(
        "chat", "/v1/chat/completions", "openai", (CHAT, CHAT_STREAM), ("test-model", "claude-fake")
    ),
    Route(
        "messages",
        "/v1/messages",
        "anthropic",
        (MESSAGES, MESSAGES_STREAM),
        ("test-model", "claude-fake"),
    ),
    Route(
        "count_tokens",
        "/v1/messages/count_tokens",
        "anthropic",
        (COUNT_TOKENS,),
        ("test-model", "claude-fake"),
    ),
    Route(
        "embeddings", "/v1/embeddings", "openai", (EMBEDDINGS, EMBEDDINGS_TOKENS), ("test-model",)
    ),
    Route("responses", "/v1/responses", "openai", (RESPONSES, RESPONSES_STREAM), ("test-model",)),
)


# Objects the gateway relays without looking inside (JSON Schemas, tool inputs, opaque
# maps): the object itself is replaced, its insides are not walked.
FREE_FORM = frozenset(
    {"parameters", "input_schema", "schema", "input", "metadata", "logit_bias", "cache_control"}
)


def field_paths(value: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every path to a value inside ``value`` (object keys and array indexes), depth first."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, inner in items:
        path = (*prefix, key)
        yield path
        if not (key in FREE_FORM and isinstance(inner, dict)):
            yield from field_paths(inner, path)


def replaced(value: Any, path: Path, new: Any) -> Any:
    """A copy of ``value`` with the value at ``path`` replaced (or removed: MISSING)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    out = dict(value) if isinstance(value, dict) else list(value)
    if not rest and new is MISSING:
        del out[head]
    else:
        out[head] = replaced(value[head], rest, new) if rest else new
    return out


def encode(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


@dataclass(frozen=True)
class Case:
    route: Route
    label: str  # e.g. "messages[2].content[1].image_url.url = huge_string"
    body: bytes


def path_label(path: Path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def route_cases(route: Route) -> Iterator[Case]:
    for base_index, base in enumerate(route.bases):
        for model in route.models:
            body = {**base, "model": model}
            where = f"base {base_index} ({model})"
            yield Case(route, f"{where}: as is", encode(body))
            for path in field_paths(body):
                for name, value in HOSTILE_VALUES.items():
                    label = f"{where}: {path_label(path)} = {name}"
                    yield Case(route, label, encode(replaced(body, path, value)))
