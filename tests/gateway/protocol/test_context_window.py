"""Which upstream errors say the prompt is too long: the forms real servers send, and
none of the look-alikes (a rate limit on tokens, an authentication error)."""

import pytest

from apps.gateway.protocol.context_window import is_context_window_error


def error(message: str, type_: str | None = "invalid_request_error", code=None) -> dict:
    return {"message": message, "type": type_, "code": code, "param": None}


TOO_LONG = [
    pytest.param(
        400,
        error(
            "This model's maximum context length is 8192 tokens.", code="context_length_exceeded"
        ),
        id="openai",
    ),
    pytest.param(400, error("Input too long", code="context_length_exceeded"), id="openai-code"),
    pytest.param(
        400,
        error(
            "This model's maximum context length is 2048 tokens. However, you requested 3000",
            "BadRequestError",
            "400",
        ),
        id="vllm",
    ),
    pytest.param(
        400,
        error(
            "The decoder prompt (length 5000) is longer than the maximum model length of 4096.",
            "BadRequestError",
        ),
        id="vllm-new",
    ),
    pytest.param(
        400,
        error(
            "the request exceeds the available context size, try increasing it",
            "exceed_context_size_error",
            "400",
        ),
        id="llama.cpp",
    ),
    pytest.param(
        500,
        error("the request exceeds the available context size, try increasing it", "server_error"),
        id="llama.cpp-500",
    ),
    pytest.param(400, error("prompt is too long: 208000 tokens > 200000 maximum"), id="anthropic"),
    pytest.param(400, error("the input length exceeds the context length"), id="ollama"),
    pytest.param(
        400,
        error("The input (5000 tokens) is longer than the model's context length (4096 tokens)."),
        id="sglang",
    ),
    pytest.param(
        422,
        error("Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096."),
        id="tgi",
    ),
]


@pytest.mark.parametrize(("status", "body"), TOO_LONG)
def test_a_prompt_too_long_is_recognised(status, body):
    assert is_context_window_error(status, body) is True


NOT_TOO_LONG = [
    pytest.param(
        429,
        error("Request too large for gpt-4 on tokens per min (TPM): Limit 10000", "tokens"),
        id="tpm-429",
    ),
    pytest.param(401, error("prompt is too long", code="context_length_exceeded"), id="401"),
    pytest.param(400, error("max_tokens must be at most 4096"), id="validation"),
    pytest.param(400, error("filtered", None, "content_filter"), id="content-filter"),
    pytest.param(503, error("maximum context length is 4096", "server_error"), id="503"),
]


@pytest.mark.parametrize(("status", "body"), NOT_TOO_LONG)
def test_other_errors_are_not_a_prompt_too_long(status, body):
    assert is_context_window_error(status, body) is False
