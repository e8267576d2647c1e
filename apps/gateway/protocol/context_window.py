"""Whether an upstream's error says the prompt does not fit the model's context window
(plain Python, no Django).

Servers say it in their own words, mostly as a 400 but some as a 413, 422 or even a
500; the forms recognised (README, "Fallback models"):

* OpenAI (and Azure): 400, ``code: "context_length_exceeded"``, "This model's maximum
  context length is 8192 tokens. However, …";
* vLLM: 400, "This model's maximum context length is 4096 tokens. However, you
  requested …", newer versions "The decoder prompt (length …) is longer than the maximum
  model length of …";
* llama.cpp server: 400 (older builds 500), ``type: "exceed_context_size_error"``, "the
  request exceeds the available context size, try increasing it";
* Anthropic: 400 ``invalid_request_error``, "prompt is too long: 208000 tokens > 200000
  maximum";
* Ollama: "the input length exceeds the context length";
* SGLang: "The input (… tokens) is longer than the model's context length (… tokens)";
* TGI: "Input validation error: `inputs` tokens + `max_new_tokens` must be <= …".
"""

import re

CONTEXT_WINDOW_CODES = frozenset({"context_length_exceeded"})
CONTEXT_WINDOW_TYPES = frozenset({"exceed_context_size_error"})
_CONTEXT_WINDOW_WORDS = re.compile(
    r"maximum context length is"
    r"|longer than the maximum model length"
    r"|exceeds the available context size"
    r"|prompt is too long"
    r"|input length exceeds the context length"
    r"|longer than the model's context length"
    r"|context length exceeded"
    r"|tokens \+ `max_new_tokens` must be <=",
    re.IGNORECASE,
)
# Statuses a prompt-too-long answer comes with; never 401/403/404/429 (a 429's "Request
# too large … tokens per min" is a rate limit, not the model's window).
CONTEXT_WINDOW_STATUSES = frozenset({400, 413, 422, 500})


def is_context_window_error(status: int, error: dict) -> bool:
    """``error``: the upstream's error object, normalised (``message``, ``type``, ``code``)."""
    if status not in CONTEXT_WINDOW_STATUSES:
        return False
    if error.get("code") in CONTEXT_WINDOW_CODES or error.get("type") in CONTEXT_WINDOW_TYPES:
        return True
    message = error.get("message")
    return isinstance(message, str) and _CONTEXT_WINDOW_WORDS.search(message) is not None
