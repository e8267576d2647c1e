"""What an upstream said when it refused or failed reaches the caller, in the caller's
protocol, without the upstream's secrets or internal addresses; client errors are never
retried on another deployment."""

import anthropic
import httpx
import openai
import pytest

from tests.conftest import openai_client, seed_document

pytestmark = pytest.mark.e2e

NATIVE = "claude-fake"
# What the fake's "#error=leak" message carries besides its point ("max_tokens must be
# at most 4096"): the credentials it received, its own address, internal names, our key.
LEAKS = (
    "upstream-secret",
    "127.0.0.1",
    "http://",
    "10.0.0.7",
    "svc.cluster.local",
    "vllm-0",
    "tg-Zx8Qm3",
)
DETAIL_WORDS = "body.temperature: Input should be less than or equal to 2"
TEXT_WORDS = "Requested tokens (5000) exceed context window of 4096"


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def leaked(message: str) -> list[str]:
    return [fragment for fragment in LEAKS if fragment in message]


def chat_error(gateway: str, secret: str, text: str, model: str = "test-model", **kwargs):
    with pytest.raises(openai.APIStatusError) as exc:
        openai_client(gateway, secret).chat.completions.create(
            model=model, messages=user(text), **kwargs
        )
    return exc.value


def messages_error(gateway: str, secret: str, text: str, model: str = "test-model", **kwargs):
    client = anthropic.Anthropic(base_url=gateway, api_key=secret, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as exc:
        client.messages.create(model=model, max_tokens=10, messages=user(text), **kwargs)
    return exc.value


def openai_message(error: openai.APIStatusError) -> str:
    return error.body["message"]


def anthropic_message(error: anthropic.APIStatusError) -> str:
    return error.body["error"]["message"]


def test_a_fastapi_validation_error_keeps_its_status(gateway, seed, upstream):
    error = chat_error(gateway, seed.secret, "#error=detail")
    assert error.status_code == 422


def test_a_fastapi_validation_error_names_each_field_and_problem(gateway, seed, upstream):
    error = chat_error(gateway, seed.secret, "#error=detail")
    assert openai_message(error) == ("body.messages.0.content: Field required; " + DETAIL_WORDS)


def test_a_fastapi_validation_error_is_an_invalid_request(gateway, seed, upstream):
    error = chat_error(gateway, seed.secret, "#error=detail")
    assert error.body["type"] == "invalid_request_error"


def test_an_ollama_error_string_is_relayed(gateway, seed, upstream):
    error = chat_error(gateway, seed.secret, "#error=ollama")
    assert openai_message(error) == 'model "fake" does not support tools'


def test_a_text_500_after_every_retry_is_a_502_saying_what_the_upstream_said(
    gateway, seed, upstream
):
    error = chat_error(gateway, seed.secret, "#error=text")
    assert (error.status_code, openai_message(error)) == (
        502,
        f"The upstream for this model is unavailable (last answer HTTP 500): {TEXT_WORDS}",
    )


def test_an_overloaded_upstream_says_what_it_said(gateway, seed, upstream):
    error = chat_error(gateway, seed.secret, "#status=503")
    assert openai_message(error) == "The model's upstream is overloaded: fake failure 503"


def test_an_upstream_message_keeps_its_point(gateway, seed, upstream):
    error = chat_error(gateway, seed.secret, "#error=leak")
    assert "max_tokens must be at most 4096" in openai_message(error)


def test_an_upstream_message_loses_secrets_and_internal_addresses(gateway, seed, upstream):
    error = chat_error(gateway, seed.secret, "#error=leak")
    assert leaked(openai_message(error)) == []


def test_a_stream_refused_before_its_first_byte_is_scrubbed_too(gateway, seed, upstream):
    error = chat_error(gateway, seed.secret, "#error=leak", stream=True)
    assert leaked(openai_message(error)) == []


def test_a_long_upstream_message_is_bounded(gateway, seed, upstream):
    error = chat_error(gateway, seed.secret, "#error=leak")
    assert len(openai_message(error)) <= 1000


def test_messages_over_an_openai_backend_relay_the_validation_error(gateway, seed, upstream):
    error = messages_error(gateway, seed.secret, "#error=detail")
    assert DETAIL_WORDS in anthropic_message(error)


def test_messages_over_an_openai_backend_answer_in_anthropics_shape(gateway, seed, upstream):
    error = messages_error(gateway, seed.secret, "#error=leak")
    assert error.body["error"]["type"] == "invalid_request_error"


def test_messages_over_an_openai_backend_scrub_the_message(gateway, seed, upstream):
    error = messages_error(gateway, seed.secret, "#error=leak")
    assert leaked(anthropic_message(error)) == []


def test_messages_after_every_retry_say_what_the_upstream_said(gateway, seed, upstream):
    error = messages_error(gateway, seed.secret, "#error=text")
    assert TEXT_WORDS in anthropic_message(error)


def test_a_native_backends_message_is_scrubbed(gateway, seed, upstream):
    error = messages_error(gateway, seed.secret, "#error=leak", model=NATIVE)
    assert leaked(anthropic_message(error)) == []


def test_chat_over_an_anthropic_backend_relays_its_message_scrubbed(gateway, seed, upstream):
    error = chat_error(gateway, seed.secret, "#error=leak", model=NATIVE)
    assert leaked(openai_message(error)) == []


def test_chat_over_an_anthropic_backend_keeps_the_point(gateway, seed, upstream):
    error = chat_error(gateway, seed.secret, "#error=leak", model=NATIVE)
    assert "max_tokens must be at most 4096" in openai_message(error)


def test_responses_relay_the_validation_error(gateway, seed, upstream):
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        openai_client(gateway, seed.secret).responses.create(
            model="test-model", input="#error=detail"
        )
    assert DETAIL_WORDS in openai_message(exc.value)


def test_embeddings_after_every_retry_say_what_the_upstream_said(gateway, seed, upstream):
    with pytest.raises(openai.InternalServerError) as exc:
        openai_client(gateway, seed.secret).embeddings.create(
            model="test-model", input="#error=text"
        )
    assert TEXT_WORDS in openai_message(exc.value)


def test_count_tokens_relays_a_native_backends_refusal_scrubbed(gateway, seed, upstream):
    r = httpx.post(
        gateway + "/v1/messages/count_tokens",
        headers={"x-api-key": seed.secret, "anthropic-version": "2023-06-01"},
        json={"model": NATIVE, "messages": user("#error=leak")},
    )
    assert (r.status_code, leaked(r.json()["error"]["message"])) == (400, [])


@pytest.fixture
def twin_secret(seed, upstream) -> str:
    """A key for "twin-model": two deployments on the fake upstream."""
    from apps.provisioning.services import config_apply

    doc = seed_document(upstream.base_url)
    twin = {"backend": "fake", "upstream_model": "twin"}
    doc["models"] = [
        {"name": "twin-model", "deployments": [twin, {**twin, "upstream_model": "twin-2"}]}
    ]
    doc["tenants"] = [{"name": "acme", "keys": [{"name": "twin", "models": ["twin-model"]}]}]
    return config_apply(document=doc).keys_created[0]["secret"]


def upstream_calls(upstream) -> int:
    return sum(1 for r in upstream.requests() if r["path"] == "/v1/chat/completions")


@pytest.mark.parametrize("directive", ["#error=detail", "#status=400", "#error=ollama"])
def test_a_client_error_is_not_tried_on_another_deployment(
    gateway, twin_secret, upstream, directive
):
    chat_error(gateway, twin_secret, directive, model="twin-model")
    assert upstream_calls(upstream) == 1


def test_a_server_error_is_tried_on_the_other_deployment(gateway, twin_secret, upstream):
    chat_error(gateway, twin_secret, "#error=text", model="twin-model")
    assert upstream_calls(upstream) == 2


def test_an_error_in_a_started_chat_stream_is_scrubbed(gateway, seed, upstream):
    stream = openai_client(gateway, seed.secret).chat.completions.create(
        model="test-model", messages=user("#mid_error=leak"), stream=True
    )
    with pytest.raises(openai.APIError) as exc:
        for _chunk in stream:
            pass
    assert leaked(exc.value.message) == []


def test_an_error_in_a_started_translated_messages_stream_is_scrubbed(gateway, seed, upstream):
    client = anthropic.Anthropic(base_url=gateway, api_key=seed.secret, max_retries=0)
    with (
        pytest.raises(anthropic.APIStatusError) as exc,
        client.messages.stream(
            model="test-model", max_tokens=10, messages=user("#mid_error=leak")
        ) as stream,
    ):
        stream.get_final_message()
    assert leaked(anthropic_message(exc.value)) == []


def test_an_error_in_a_started_chat_stream_over_an_anthropic_backend_is_scrubbed(
    gateway, seed, upstream
):
    stream = openai_client(gateway, seed.secret).chat.completions.create(
        model=NATIVE, messages=user("#mid_error=leak"), stream=True
    )
    with pytest.raises(openai.APIError) as exc:
        for _chunk in stream:
            pass
    assert leaked(exc.value.message) == []


def test_an_error_in_a_started_responses_stream_is_scrubbed(gateway, seed, upstream):
    events = openai_client(gateway, seed.secret).responses.create(
        model="test-model", input="#mid_error=leak", stream=True
    )
    failed = [event for event in events if event.type == "response.failed"]
    assert leaked(failed[0].response.error.message) == []
